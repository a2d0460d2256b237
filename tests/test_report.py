"""``lora-budget report``: valid figure files, CSV numbers equal to plan's, parity figures from rows."""

import csv
import dataclasses
import json
import xml.etree.ElementTree as ET

import pytest
from click.testing import CliRunner

pytest.importorskip("matplotlib", reason="needs matplotlib: pip install -e .[report]")

from lora_budget.api import plan, plan_spec  # noqa: E402
from lora_budget.cli import main  # noqa: E402
from lora_budget.errors import LoraBudgetError  # noqa: E402
from lora_budget.report import figures as F  # noqa: E402
from lora_budget.report.data import ParityRow, gather  # noqa: E402
from lora_budget.report.profiles import _rows_from_profiles  # noqa: E402
from lora_budget.report.writer import write_report  # noqa: E402

MAGIC = {"png": b"\x89PNG\r\n\x1a\n", "pdf": b"%PDF-", "svg": b"<?xml"}


def assert_valid(path):
    data = path.read_bytes()
    fmt = path.suffix[1:]
    assert len(data) > 2000, path
    assert data.startswith(MAGIC[fmt]), path
    if fmt == "svg":
        root = ET.fromstring(data)
        assert root.tag == "{http://www.w3.org/2000/svg}svg"
        assert root.get("width").endswith("pt") and float(root.get("width")[:-2]) == pytest.approx(3.5 * 72)
    if fmt == "pdf":
        assert data.rstrip().endswith(b"%%EOF")


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "7b-24GB"
    r = CliRunner().invoke(
        main, ["report", "-m", "7b", "-g", "24GB", "--out", str(out), "--format", "png,svg,pdf"], catch_exceptions=False
    )
    assert r.exit_code == 0, r.output
    return out


def test_every_figure_is_a_valid_file(report):
    stems = ("breakdown", "scaling_seq_len", "scaling_batch")
    for stem in stems:
        for fmt in ("png", "svg", "pdf"):
            assert_valid(report / f"{stem}.{fmt}")
    md = (report / "report.md").read_text()
    for stem in stems:
        assert f"]({stem}.png)" in md
    for name in ("breakdown.csv", "scaling.csv", "crossings.csv"):
        assert (report / name).exists() and f"]({name})" in md


def test_breakdown_csv_equals_plan(report):
    result = plan("7b", "24GB")
    table = {r["method"]: r for r in rows(report / "breakdown.csv")}
    assert list(table) == [m.method for m in result.methods]
    for m in result.methods:
        row = table[m.method]
        assert int(row["peak_bytes"]) == m.peak_bytes
        assert int(row["capacity_bytes"]) == result.gpu.memory_bytes
        for cat, value in m.breakdown.as_dict().items():
            assert int(row[f"{cat}_bytes"]) == value
        assert row["fits"] == str(m.fits)


def test_scaling_csv_equals_plan_at_each_point(report):
    gpu = plan("7b", "24GB").gpu
    table = rows(report / "scaling.csv")
    specs = {m.method: m.spec for m in plan("7b", "24GB").methods}
    checked = 0
    for row in table[:: max(1, len(table) // 12)]:  # a sample of points on both axes, each planned afresh
        spec = dataclasses.replace(specs[row["method"]], batch_size=int(row["batch_size"]), seq_len=int(row["seq_len"]))
        assert int(row["peak_bytes"]) == plan_spec(spec, gpu, advise=False).peak_bytes
        checked += 1
    assert checked >= 10
    assert {r["axis"] for r in table} == {"seq_len", "batch_size"}


def test_crossings_are_where_the_plan_stops_fitting(report):
    result = plan("7b", "24GB")
    for row in rows(report / "crossings.csv"):
        m = next(m for m in result.methods if m.method == row["method"])
        axis, largest = row["axis"], int(row["max_fitting"])
        assert largest == (m.max_seq_len if axis == "seq_len" else m.max_batch_size)
        if largest:
            at = plan_spec(dataclasses.replace(m.spec, **{axis: largest}), result.gpu, advise=False)
            assert at.fits and int(row["peak_bytes"]) == at.peak_bytes
        past = plan_spec(dataclasses.replace(m.spec, **{axis: largest + 1}), result.gpu, advise=False)
        assert not past.fits


def test_existing_report_is_not_overwritten(report):
    before = (report / "report.md").read_text()
    r = CliRunner().invoke(main, ["report", "--out", str(report)], catch_exceptions=False)
    assert r.exit_code == 2 and "--overwrite" in r.output
    assert (report / "report.md").read_text() == before


def test_bad_format_exits_2(tmp_path):
    r = CliRunner().invoke(main, ["report", "--out", str(tmp_path / "x"), "--format", "png,gif"])
    assert r.exit_code == 2 and "choose from png, svg, pdf" in r.output


# -- parity figures from plain rows -----------------------------------------------------------

SYNTHETIC = [  # (method, predicted, measured): errors of +5 %, -2 %, +10 %, 0 %
    ("lora", 105 * 2**28, 100 * 2**28),
    ("lora", 98 * 2**28, 100 * 2**28),
    ("qlora", 66 * 2**27, 60 * 2**27),
    ("full", 3 * 2**33, 3 * 2**33),
]


def test_error_pct_is_signed_relative_to_measured():
    assert [ParityRow(method=m, predicted_bytes=p, measured_bytes=q).error_pct for m, p, q in SYNTHETIC] == [
        pytest.approx(5.0),
        pytest.approx(-2.0),
        pytest.approx(10.0),
        0.0,
    ]


def test_parity_and_error_figures_from_rows(tmp_path):
    for fig, stem in (
        (F.parity_figure(SYNTHETIC, "Predicted vs measured"), "parity"),
        (F.error_figure(SYNTHETIC, "Error by method"), "error"),
    ):
        for path in F.save(fig, tmp_path, stem, ("png", "svg", "pdf")):
            assert_valid(path)
    svg = (tmp_path / "parity.svg").read_text()
    assert "±5 %" in svg and "LoRA" in svg and "QLoRA" in svg  # text stays text (svg.fonttype none)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        f"{s}.{f}" for s in ("parity", "error") for f in ("png", "svg", "pdf")
    )  # no temp files left


def test_profiles_files_feed_the_report(tmp_path):
    prof = tmp_path / "profiles"
    prof.mkdir()
    rows_json = [{"method": m, "predicted_bytes": p, "measured_bytes": q} for m, p, q in SYNTHETIC]
    (prof / "a.json").write_text(json.dumps({"schema": 1, "rows": rows_json[:2]}))
    (prof / "b.json").write_text(json.dumps(rows_json[2]))
    (prof / "c.json").write_text(json.dumps(rows_json[3:]))
    parsed = _rows_from_profiles([prof])
    assert [(r.method, r.predicted_bytes, r.measured_bytes) for r in parsed] == SYNTHETIC
    out = tmp_path / "rep"
    r = CliRunner().invoke(main, ["report", "--out", str(out), "--profiles", str(prof)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert_valid(out / "parity.png") and assert_valid(out / "error.svg")
    table = rows(out / "parity.csv")
    assert [int(t["measured_bytes"]) for t in table] == [q for _, _, q in SYNTHETIC]
    assert "+10.00 %" in (out / "report.md").read_text()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{", "cannot read it as JSON"),
        ('{"method": "lora", "predicted_bytes": 1.5, "measured_bytes": 2}', "positive integer"),
    ],
)
def test_bad_profiles_are_one_line_errors(tmp_path, content, message):
    (tmp_path / "p.json").write_text(content)
    with pytest.raises(LoraBudgetError, match=message):
        _rows_from_profiles([tmp_path / "p.json"])


def test_labels_do_not_overlap(tmp_path):
    """Every text on the breakdown and scaling figures lies inside the figure and overlaps no other text."""
    data = gather("7b", "24GB")
    figs = [
        F.breakdown_figure(
            data.breakdown, data.capacity_bytes, "22.35 GiB", "Peak memory by category: " + data.settings
        ),
        F.scaling_figure(data.scaling, data.crossings, data.capacity_bytes, "22.35 GiB", "seq_len", "Peak vs seq"),
        F.error_figure(SYNTHETIC, "Error by method"),
    ]
    for fig in figs:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.text import Text

        renderer = FigureCanvasAgg(fig).get_renderer()
        fig.draw(renderer)
        hidden = set()  # tick labels of ticks outside the view limits exist but are not drawn
        for ax in fig.axes:
            for axis, (lo, hi) in ((ax.xaxis, sorted(ax.get_xlim())), (ax.yaxis, sorted(ax.get_ylim()))):
                for tick in axis.get_major_ticks():
                    if not lo - 1e-9 <= tick.get_loc() <= hi + 1e-9:
                        hidden.update({id(tick.label1), id(tick.label2)})
        boxes = [
            t.get_window_extent(renderer)
            for t in fig.findobj(Text)
            if t.get_visible() and t.get_text().strip() and id(t) not in hidden
        ]
        assert len(boxes) >= 8
        frame = fig.bbox
        for b in boxes:
            assert frame.x0 - 1 <= b.x0 and b.x1 <= frame.x1 + 1 and frame.y0 - 1 <= b.y0 and b.y1 <= frame.y1 + 1
        for i, a in enumerate(boxes):
            for b in boxes[i + 1 :]:
                assert not a.overlaps(b) or a.width * a.height == 0 or b.width * b.height == 0, (a, b)


@pytest.mark.torch
def test_timeline_from_a_tiny_trace(tmp_path):
    pytest.importorskip("transformers")
    pytest.importorskip("peft")
    from lora_budget.report.data import timeline_from_trace, with_extras
    from lora_budget.spec import TrainSpec
    from lora_budget.trace.engine import trace
    from tests.tiny_models import tiny_ref

    spec = TrainSpec(model=tiny_ref("llama"), method="lora", batch_size=2, seq_len=16, rank=4)
    result = trace(spec, keep_timeline=True)
    tl = timeline_from_trace(result, points=50)
    assert tl.peak_bytes == result.peak_bytes  # binning keeps the maximum
    assert max(live for _, live, _ in tl.points) == result.peak_bytes
    assert len(tl.points) <= 50 and {s[0] for s in tl.spans} >= {"forward", "backward", "optimizer"}
    data = with_extras(gather(tiny_ref("llama"), "1GiB", "lora", batch_size=2, seq_len=16, rank=4), timeline=tl)
    written = write_report(data, tmp_path, ("png", "svg"))
    for path in written.figures["timeline"]:
        assert_valid(path)
    assert (
        int(max(rows(tmp_path / "timeline.csv"), key=lambda r: int(r["live_bytes"]))["live_bytes"]) == result.peak_bytes
    )


def test_a_multi_gpu_report_says_its_numbers_are_per_gpu(tmp_path):
    out = tmp_path / "70b-8x"
    args = ["report", "-m", "70b", "-g", "a100-80gb", "--gpus", "8", "--strategy", "fsdp", "--grad-ckpt"]
    r = CliRunner().invoke(main, [*args, "--out", str(out), "--format", "svg"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    md = (out / "report.md").read_text()
    assert "per GPU of 8 x A100 80GB, fsdp" in md and "on each of 8 GPUs" in md
    (lora,) = [row for row in rows(out / "breakdown.csv") if row["method"] == "lora"]
    per_gpu = plan("70b", "a100-80gb", ("lora",), gpus=8, strategy="fsdp", grad_ckpt=True).methods[0]
    assert int(lora["peak_bytes"]) == per_gpu.peak_bytes
