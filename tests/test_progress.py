"""The one progress renderer (lstmcore._progress): training's bar and a study's live block draw through it."""
import io

from lstmcore._progress import LiveBlock, ProgressBar, bar, duration


def test_bar_and_duration_text():
    assert bar(0, 4, 8) == "[........]" and bar(2, 4, 8) == "[####....]" and bar(4, 4, 8) == "[########]"
    assert bar(9, 4, 8) == "[########]" and bar(0, 0, 3) == "[###]"  # never overfull; nothing to do is done
    assert duration(None) == duration(float("nan")) == "--:--"
    assert duration(75.4) == "1:15" and duration(3 * 3600 + 62) == "3:01:02"


def test_a_live_block_redraws_over_its_previous_lines():
    stream = io.StringIO()
    block = LiveBlock(stream)
    block.draw(["a", "b"])
    block.draw(["c", "d", "e"])
    block.draw(["f"])
    text = stream.getvalue()
    assert text == ("\x1b[2Ka\n\x1b[2Kb\n" "\x1b[2F\x1b[2Kc\n\x1b[2Kd\n\x1b[2Ke\n" "\x1b[3F\x1b[2Kf\n")


def test_a_live_block_skips_draws_closer_than_its_interval_unless_forced():
    stream = io.StringIO()
    block = LiveBlock(stream, min_interval=3600)
    block.draw(["first"])
    block.draw(["skipped"])
    block.draw(["forced"], force=True)
    assert "first" in stream.getvalue() and "skipped" not in stream.getvalue() and "forced" in stream.getvalue()


def test_the_training_bar_and_the_study_block_share_the_renderer():
    from lstmcore.ablation.progress import Progress

    bar_stream, study_stream = io.StringIO(), io.StringIO()
    progress_bar = ProgressBar(3, "epoch 1/2", stream=bar_stream, width=6)
    progress_bar.update(1, "loss 0.5", force=True)
    progress_bar.close("loss 0.4")
    assert bar_stream.getvalue().endswith("\x1b[1F\x1b[2Kepoch 1/2 [######] 3/3 loss 0.4\n")
    study = Progress(["peephole"], 2, [], live=True, stream=study_stream)
    study.start("1 process")
    study.trial_started("peephole-0")
    head = study.lines()[0]
    assert head.startswith(bar(0, 2, 30)) and "1 running" in head
    assert study_stream.getvalue().count("\x1b[2F") == 1  # the second draw went back over the first two lines
