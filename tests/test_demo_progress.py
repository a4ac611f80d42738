"""The demo's overall progress line (issue 15): stage k/n, elapsed, an ETA from the stages' expected shares."""

from __future__ import annotations

from vidprobe.pipeline.demo import DemoPlan, StageClock, default_plan, stage_weights


class FakeClock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_the_eta_scales_the_expected_seconds_left_by_the_measured_pace():
    t = FakeClock()
    c = StageClock({"a": 10.0, "b": 30.0, "c": 60.0}, clock=t)
    assert c.start("a") == "overall 1/3, 0:00 elapsed, ETA 1:40"  # no stage measured yet: the expected 100 s
    t.t += 20.0  # "a" takes twice its 10 expected seconds
    assert c.start("b") == "overall 2/3, 0:20 elapsed, ETA 3:00"  # 2 x (30 + 60)
    t.t += 15.0
    assert c.text() == "overall 2/3, 0:35 elapsed, ETA 2:45"  # 15 s of "b" already spent
    t.t += 15.0  # "b" took its 30 expected seconds: the pace is now (20 + 30) / (10 + 30) = 1.25
    assert c.start("c") == "overall 3/3, 0:50 elapsed, ETA 1:15"


def test_a_stage_found_done_is_left_out_of_the_pace():
    t = FakeClock()
    c = StageClock({"a": 10.0, "b": 10.0, "c": 10.0}, clock=t)
    c.start("a")
    t.t += 0.01
    c.finish(skipped=True)  # resumed: nothing to do, so no evidence about the machine
    assert c.start("b").endswith("ETA 0:20")  # still the expected pace, not ~0
    t.t += 30.0
    assert c.start("c") == "overall 3/3, 0:30 elapsed, ETA 0:30"  # 3x slower than expected


def test_a_failed_backbone_drops_its_remaining_stages():
    t = FakeClock()
    c = StageClock({"x: features": 5.0, "x: training": 50.0, "y: features": 5.0, "report": 5.0}, clock=t)
    c.start("x: features")
    t.t += 5.0
    c.skip_rest("x: ")
    assert c.start("y: features") == "overall 3/4, 0:05 elapsed, ETA 0:10"


def test_the_plan_gives_every_stage_a_share_and_the_line_is_plain_text():
    plan = default_plan()
    w = stage_weights(plan)
    assert list(w)[0] == "data" and list(w)[-1] == "report" and len(w) == 2 + 3 * len(plan.backbones)
    assert all(v > 0 for v in w.values())
    assert w["oracle: training"] > w["oracle: features"]  # training is most of the demo
    line = StageClock(stage_weights(DemoPlan(backbones={"oracle": {}}))).start("data")
    assert line.isprintable() and "\r" not in line and "\x1b" not in line  # fine in a log file or a pipe
