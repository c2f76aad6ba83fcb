"""The summary's calibrated-prediction rules: kernels explain the time, or something beyond them does."""

from __future__ import annotations

import attrs
from tests.report_views import full_view

from dsocr.report import summary as summ


def _with_calibrated(**calibrated: float) -> object:
    view = full_view()
    stages = tuple(
        attrs.evolve(st, calibrated_ns=calibrated[st.name]) if st.name in calibrated else st for st in view.stages
    )
    return attrs.evolve(view, stages=stages)


def test_kernels_explain_and_composition_gap() -> None:
    # vision: busy 39.67 ms, roofline 10 ms (4.0x); calibrated 38 ms -> 1.04x, off by 4.4%
    # prefill: 7.5x the roofline; calibrated 40 ms -> 60.33 / 40 = 1.51x the kernels alone
    view = _with_calibrated(vision=38e6, prefill=40e6)
    acts = {a.rule: a for a in summ.actions(view)}  # type: ignore[arg-type]
    explain = acts["kernels-explain"].text
    assert explain.startswith(
        "Far from the roofline, yet its kernels timed alone add up to the measured GPU time of vision"
    )
    assert "off by 4.4%, below the 15.0% threshold" in explain
    gap = acts["composition-gap"].text
    assert gap.startswith(
        "The GPU work of prefill took 1.5x the time of its kernels timed alone (above the 1.3x threshold)"
    )


def test_no_calibration_no_calibrated_rules() -> None:
    rules = {a.rule for a in summ.actions(full_view())}
    assert not rules & {"kernels-explain", "composition-gap"}


def test_close_to_the_roofline_is_not_called_kernel_bound() -> None:
    view = full_view()
    near = tuple(
        attrs.evolve(st, calibrated_ns=st.gpu_busy_ns.mean, predicted_ns=st.gpu_busy_ns.mean / 2) for st in view.stages
    )
    rules = {a.rule for a in summ.actions(attrs.evolve(view, stages=near))}
    assert "kernels-explain" not in rules  # 2x the roofline is not "far" (3x)


def test_html_shows_calibrated_columns_only_with_a_calibration() -> None:
    from dsocr.report import html

    plain = html.render_html(full_view())
    assert "measured / calibrated" not in plain
    shown = html.render_html(_with_calibrated(vision=38e6, prefill=40e6))  # type: ignore[arg-type]
    table = shown[shown.index('<table id="stage-work">') :]
    table = table[: table.index("</table>")]
    assert '<th class="num">measured / calibrated</th>' in table
    vision_row = table[table.index("<td>vision</td>") :]
    vision_row = vision_row[: vision_row.index("</tr>")]
    assert '<td class="num">38.0 ms</td>' in vision_row
    assert '<td class="num">1.04x</td>' in vision_row  # 39.67 ms busy / 38 ms calibrated
