"""Training metrics read back: scripts/training_curves.py over metrics.jsonl files."""


def test_training_curves_table_and_plot(tmp_path, capsys):
    """scripts/training_curves.py on a metrics.jsonl as finetune.py writes it (a torn last line included)."""
    import importlib.util
    import json
    from pathlib import Path

    run = tmp_path / "run"
    run.mkdir()
    lines = [json.dumps({"step": s, "loss": 1 / s, "learning_rate": 1e-3, "noise_scale": 1 - s / 100,
                         **({"kept_visual_tokens": 128 - s} if s % 10 == 0 or s == 1 else {})})
             for s in range(1, 101)]  # fmt: skip
    (run / "metrics.jsonl").write_text("\n".join(lines) + '\n{"step": 101, "lo')
    spec = importlib.util.spec_from_file_location("curves", Path(__file__).parents[1] / "scripts" / "training_curves.py")
    curves = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(curves)
    result = curves.main([str(run), "--plot", str(tmp_path / "c.png"), "--rows", "4"])
    records = result[str(run)]
    assert [r["step"] for r in records] == list(range(1, 101))
    table = capsys.readouterr().out.splitlines()
    assert table[1].split() == ["step", "loss", "lr", "noise", "kept", "tokens"]
    # rows at evenly spaced kept-token measurements, first and last included
    assert [int(row.split()[0]) for row in table[2:6]] == [1, 30, 70, 100]
    assert table[5].split()[-1] == "28.0"
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
