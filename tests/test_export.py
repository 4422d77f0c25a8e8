"""Export with the front end: TorchScript (always) and ONNX (needs onnx, onnxscript, onnxruntime; skipped
without them), for the built-in cnn and bcresnet, at other batch sizes and lengths than traced.

The reference is the same model run in float64 (front end included). The tolerance is not a guess:
an exported float32 model may differ from that reference by as much as PyTorch's own float32 forward
does, with a margin: ``10 x max(|eager32 - f64|, 4 eps32 max|logits|)``. Measured: eager float32 is
1e-7..2e-6 from float64 on these models; TorchScript equals eager bit for bit; onnxruntime is within
4x of eager's error (tolerance ~1e-5). The models have BatchNorm statistics from random waveforms and random
affine parameters, so their logits spread by ~0.1 across inputs (asserted): agreement is not trivial.
"""
import copy
import json

import pytest
import torch

from audioconv.app import export as E
from audioconv.cli import main
from audioconv.models.registry import build_model, describe
from audioconv.training.checkpoint import save_checkpoint

EPS32 = torch.finfo(torch.float32).eps
SHAPES = [(2, 1, 16000), (7, 1, 16000), (3, 1, 12345), (1, 1, 257), (1, 1, 40000)]


def calibrated(spec: str, seed: int = 0) -> torch.nn.Module:
    """A model whose BatchNorms hold statistics of random waveforms and random scales and shifts
    (``"cnn+pcen"``: the cnn with the PCEN front end)."""
    torch.manual_seed(seed)
    spec, _, normalize = spec.partition("+")
    model = build_model(spec, 5, 16000, frontend={"normalize": normalize} if normalize else None,
                        **({"channels": (8, 16, 16)} if spec == "cnn" else {}))
    g = torch.Generator().manual_seed(seed)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.momentum = None  # running statistics = the mean over the batches below
    with torch.no_grad():
        for _ in range(3):
            model(0.1 * torch.randn(8, 1, 16000, generator=g))
        for m in norms:
            m.weight.uniform_(0.5, 1.5, generator=g)
            m.bias.uniform_(-0.5, 0.5, generator=g)
    return model.eval()


def logits_f64(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The model in float64, front end included (LogMel.power computes in float32, so it is by-passed)."""
    m = copy.deepcopy(model).double()
    return m.classify(m.frontend.to_db(m.frontend.mel(x.double().mean(dim=1)).unsqueeze(1)))


def check_against_float64(model, run):
    """``run(x)`` against the float64 model on SHAPES with the tolerance of the module docstring."""
    g = torch.Generator().manual_seed(1)
    for shape in SHAPES:
        x = 0.1 * torch.randn(*shape, generator=g)
        with torch.no_grad():
            eager, ref = model(x), logits_f64(model, x)
        tol = 10 * max(float((eager.double() - ref).abs().max()), 4 * EPS32 * float(ref.abs().max()))
        out = run(x)
        assert out.shape == (shape[0], 5) and out.dtype == torch.float32
        err = float((out.double() - ref).abs().max())
        assert err <= tol, (shape, err, tol)
        if shape[0] > 1:  # the logits do depend on the input, by far more than the tolerance
            assert float(ref.std(dim=0).max()) > 100 * tol


@pytest.mark.parametrize("spec", ["cnn", "bcresnet", "cnn+pcen"])
@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_torchscript_with_front_end_matches_float64_at_any_batch_and_length(spec, tmp_path):
    model = calibrated(spec)
    example = E.check_inputs(model, 16000)[0]
    path = E.save_torchscript(E.trace_torchscript(model, example), tmp_path / "m.pt", {"labels": list("abcde")})
    check_against_float64(model, lambda x: E.run_exported("torchscript", path, x))
    extra = {"audioconv.json": ""}
    torch.jit.load(str(path), _extra_files=extra)
    assert json.loads(extra["audioconv.json"]) == {"labels": list("abcde")}


@pytest.mark.parametrize("spec", ["cnn", "bcresnet", "cnn+pcen"])
def test_onnx_with_front_end_matches_float64_at_any_batch_and_length(spec, tmp_path):
    pytest.importorskip("onnxscript")
    pytest.importorskip("onnxruntime")
    import onnx

    model = calibrated(spec)
    path = E.save_onnx(E.onnx_bytes(model, E.check_inputs(model, 16000)[0], {"labels": list("abcde")}),
                       tmp_path / "m.onnx")
    check_against_float64(model, lambda x: E.run_exported("onnx", path, x))
    proto = onnx.load(str(path))
    assert {p.key: json.loads(p.value) for p in proto.metadata_props} == {"labels": list("abcde")}
    dims = [[d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in (proto.graph.input[0],
                                                                                       proto.graph.output[0])]
    assert dims[0][1] == 1 and isinstance(dims[0][0], str) and isinstance(dims[0][2], str)  # free batch and time
    assert dims[1][1] == 5 and dims[1][0] == dims[0][0]


def write_checkpoint(path, model, clip_s=0.5):
    spec, config = describe(model)
    return save_checkpoint(path, {"kind": "model", "model": model.state_dict(), "model_spec": spec,
                                  "model_config": config, "labels": list("abcde"), "train_config": {"clip_s": clip_s}})


def test_export_command_writes_checks_and_reports(tmp_path, capsys):
    ckpt = write_checkpoint(tmp_path / "best.pt", calibrated("cnn"))
    assert main(["export", "--checkpoint", str(ckpt), "--format", "torchscript", "-o", str(tmp_path / "m.pt"),
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["metadata"]["labels"] == list("abcde") and result["metadata"]["clip_samples"] == 8000
    assert [c["shape"] for c in result["checks"]] == [[3, 1, 8000], [2, 1, 5840]]
    assert result["max_abs_diff"] <= result["tolerance"]
    # the check can fail: an exported model that is off by 1e-3 is refused, naming the difference
    real = E.run_exported
    try:
        E.run_exported = lambda fmt, path, x: real(fmt, path, x) + 1e-3
        with pytest.raises(ValueError, match=r"differs from the PyTorch model by up to 0\.001"):
            E.export_checkpoint(ckpt, "torchscript", tmp_path / "m2.pt")
    finally:
        E.run_exported = real


def test_export_errors_are_one_line(tmp_path, capsys, monkeypatch):
    assert main(["export", "--checkpoint", str(tmp_path / "none.pt"), "--format", "torchscript",
                 "-o", str(tmp_path / "m.pt")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    ckpt = write_checkpoint(tmp_path / "best.pt", calibrated("cnn"))
    monkeypatch.setitem(__import__("sys").modules, "onnxscript", None)  # as if the extra were not installed
    assert main(["export", "--checkpoint", str(ckpt), "--format", "onnx", "-o", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert "pip install 'audioconv[onnx]'" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(ValueError, match="format must be one of torchscript, onnx"):
        E.export_checkpoint(ckpt, "tflite", tmp_path / "m.tflite")
