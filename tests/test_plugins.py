"""Plugins: the integration registry, entry-point discovery, its off switch, and the Optuna hook."""

from __future__ import annotations

import json
from typing import Any

import pytest

from t2v_hub import registry as reg
from t2v_hub.cli.main import main
from t2v_hub.errors import T2VError
from t2v_hub.probes import adapters


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    """Empty registries that discover again on first use (restored afterwards)."""
    for r in (reg.INTEGRATIONS, reg.PROBE_ADAPTERS):
        for attr in ("_items", "_sources", "_failed"):
            monkeypatch.setattr(r, attr, {})
        monkeypatch.setattr(r, "_loaded", False)
    monkeypatch.delenv("T2V_HUB_DISABLE_PLUGIN_AUTOLOAD", raising=False)


class _LevitLike(adapters.GenericAdapter):
    family = "levit_like"


def _with_probe_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    """An installed third-party probe adapter: a fake entry point in the t2v_hub.probes group."""
    from importlib import metadata

    ep = metadata.EntryPoint("levit_like", f"{__name__}:_LevitLike", "t2v_hub.probes")
    real = metadata.entry_points

    def fake(**kw: Any) -> Any:
        eps = list(real(**kw))
        return [*eps, ep] if kw.get("group") == "t2v_hub.probes" else eps

    monkeypatch.setattr(metadata, "entry_points", fake)


def test_duplicate_registration_refused_unless_overwrite(fresh: None) -> None:
    reg.register_integration("mine", object(), source="a")
    with pytest.raises(reg.RegistryError, match="already registered.*overwrite=True"):
        reg.register_integration("mine", object(), source="b")
    reg.register_integration("mine", 1, source="b", overwrite=True)
    assert reg.list_integrations()["mine"] == "b" and reg.get_integration("mine") == 1
    adapters.register_probe_adapter("fam", adapters.GenericAdapter())
    with pytest.raises(reg.RegistryError, match="probe adapter named 'fam'"):
        adapters.register_probe_adapter("fam", adapters.GenericAdapter())


def test_probe_adapter_plugin_discovered(fresh: None, monkeypatch: pytest.MonkeyPatch) -> None:
    _with_probe_plugin(monkeypatch)
    assert "levit_like" in adapters.list_probe_adapters()
    assert isinstance(adapters.get_probe_adapter("levit_like"), _LevitLike)
    # Families without an adapter get the generic one (timm's common API).
    assert type(adapters.get_probe_adapter("resnet")) is adapters.GenericAdapter


def test_entry_points_discovered(fresh: None) -> None:
    assert reg.list_integrations() == {"optuna": "t2v-hub"}
    optuna_int = reg.get_integration("optuna")
    assert optuna_int.name == "optuna" and callable(optuna_int.enqueue_backbones)
    with pytest.raises(T2VError, match="no integration named 'mlflow'.*optuna"):
        reg.get_integration("mlflow")
    reg.register_integration("mine", object(), source="my-dist")
    assert reg.list_integrations()["mine"] == "my-dist"


def test_autoload_off_switch(fresh: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("T2V_HUB_DISABLE_PLUGIN_AUTOLOAD", "1")
    assert reg.list_integrations() == {}
    assert adapters.list_probe_adapters() == {}
    with pytest.raises(T2VError, match="autoload is off"):
        reg.get_integration("optuna")


def test_cli_plugins_list(fresh: None, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    _with_probe_plugin(monkeypatch)
    assert main(["plugins", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {tuple(line.split()) for line in lines[1:]}
    assert any(r[:2] == ("probe-adapter", "levit_like") for r in rows)
    assert ("integration", "optuna", "t2v-hub") in rows
    assert main(["plugins", "list", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["autoload"] is True


def test_cli_plugins_list_autoload_disabled(fresh: None, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("T2V_HUB_DISABLE_PLUGIN_AUTOLOAD", "1")
    assert main(["plugins", "list", "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == {"autoload": False, "plugins": [], "failed": {}}
    assert main(["plugins", "list"]) == 0
    cap = capsys.readouterr()
    assert "(none)" in cap.out and "autoload is off" in cap.err


def test_broken_plugin_is_reported_not_fatal(fresh: None, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from importlib import metadata

    bad = metadata.EntryPoint("broken", "no_such_module_xyz:Thing", "t2v_hub.integrations")
    real = metadata.entry_points

    def fake(**kw: Any) -> Any:
        eps = list(real(**kw))
        return [*eps, bad] if kw.get("group") == "t2v_hub.integrations" else eps

    monkeypatch.setattr(metadata, "entry_points", fake)
    assert main(["plugins", "list"]) == 0
    cap = capsys.readouterr()
    assert "optuna" in cap.out and "'broken' failed to load" in cap.err


class _Rec:
    def __init__(self, name: str) -> None:
        self.name = name


def test_optuna_enqueue_backbones_runs_best_first() -> None:
    optuna = pytest.importorskip("optuna")
    from t2v_hub_plugins.integrations.optuna import backbone_choices, enqueue_backbones

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    recs = [_Rec("hf-hub:org/best"), _Rec("hf-hub:org/second"), _Rec("hf-hub:org/third")]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    assert enqueue_backbones(study, "backbone", recs, top_k=2) == ["hf-hub:org/best", "hf-hub:org/second"]
    enqueue_backbones(study, "backbone", recs, top_k=2)  # idempotent: no duplicate trials
    seen: list[str] = []

    def objective(trial: Any) -> float:
        seen.append(trial.suggest_categorical("backbone", backbone_choices(recs, ["timm/resnet18"])))
        return float(len(seen))

    study.optimize(objective, n_trials=3)
    assert seen[:2] == ["hf-hub:org/best", "hf-hub:org/second"] and len(seen) == 3
    with pytest.raises(ValueError, match="top_k"):
        enqueue_backbones(study, "backbone", recs, top_k=0)


class _Study:
    def __init__(self) -> None:
        self.queued: list[dict[str, str]] = []

    def enqueue_trial(self, params: dict[str, str], skip_if_exists: bool = False) -> None:
        self.queued.append(params)


def test_optuna_helpers_take_one_name_as_one_backbone_and_refuse_nonsense() -> None:
    from t2v_hub_plugins.integrations.optuna import backbone_choices, enqueue_backbones

    study = _Study()
    assert enqueue_backbones(study, "backbone", "resnet50") == ["resnet50"]  # not ['r', 'e', 's', ...]
    assert study.queued == [{"backbone": "resnet50"}]
    assert backbone_choices("resnet50", "resnet18") == ["resnet50", "resnet18"]
    assert backbone_choices([_Rec("a"), "b"], ["a", "c"]) == ["a", "b", "c"]
    for bad in ("3", 2.5, True, -1):
        with pytest.raises(ValueError, match="top_k"):
            enqueue_backbones(study, "backbone", ["a"], top_k=bad)
    for rec in (None, 3, ""):
        with pytest.raises(ValueError, match="expected a Recommendation or a model name"):
            enqueue_backbones(study, "backbone", [rec])


@pytest.mark.slow
def test_optuna_example_quick(tmp_path, monkeypatch) -> None:
    """The shipped example end to end (a few minutes on a busy 2-core machine)."""
    import importlib.util
    from pathlib import Path

    pytest.importorskip("optuna")
    monkeypatch.setenv("T2V_HUB_CACHE", str(tmp_path / "cache"))
    path = Path(__file__).resolve().parent.parent / "examples" / "optuna_example.py"
    spec = importlib.util.spec_from_file_location("optuna_example", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = mod.main(["--quick", "--hub", str(tmp_path / "hub"), "--trials", "2"])
    assert out["trials"][:2] == out["queued"] and out["queued"][0].startswith("local-dir:")
    assert len(out["recommendations"]) == 3 and 0.0 <= out["best"] <= 1.0
