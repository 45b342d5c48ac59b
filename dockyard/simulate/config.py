"""The simulator's YAML config (`dockyard simulate --config sim.yaml`), read into the objects the
`Simulator` takes. Secret values never live in the file: each warehouse names an environment
variable (`secret_env`) that holds its secret.

    seed: 1
    upstream_secret_env: UPSTREAM_HMAC_SECRET      # optional: verify X-Dockyard-Signature
    upstream_faults: {error_rate: 0.01}            # optional
    feedback: {enabled: true, step_delay: 0.05, duplicate_push_rate: 0.0, max_push_attempts: 5,
               route_batch: 1}                  # route_batch: SF routes (of any orders) per push
    warehouses:                                    # a list, or a mapping keyed by name
      - name: qimen-std
        kind: qimen                                # qimen | sf | jd | cainiao
        secret_env: QIMEN_STD_SECRET
        callback_base: http://127.0.0.1:8080/callbacks/qimen-std   # optional: no pushes without it
        faults: {error_rate: 0.02, timeout_rate: 0.01, timeout_seconds: 15}
        context_file: ../mappings/qimen/warehouses/standard-wms.yaml  # optional, relative to this file
        context: {identicalRepeatIsSuccess: false}                   # merged over context_file
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from dockyard.simulate.faults import Faults
from dockyard.simulate.feedback import Feedback
from dockyard.simulate.warehouses import SimWarehouse

__all__ = ["SimConfig", "SimConfigError", "load_sim_config"]

_TOP = {"seed", "upstream_secret_env", "upstream_faults", "feedback", "warehouses"}
_WAREHOUSE = {"name", "kind", "secret_env", "callback_base", "faults", "context", "context_file"}


class SimConfigError(ValueError):
    """A simulator config that cannot be used; the message names the file and the entry."""


@dataclass(frozen=True)
class SimConfig:
    warehouses: tuple[SimWarehouse, ...]
    feedback: Feedback
    upstream_secret: str | None
    upstream_faults: Faults
    seed: int


def _mapping(value: object, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SimConfigError(f"{where}: expected a mapping, not {type(value).__name__}")
    return value


def _unknown(data: Mapping[str, Any], known: set[str], where: str) -> None:
    extra = sorted(set(data) - known)
    if extra:
        raise SimConfigError(f"{where}: unknown key(s) {extra}; known: {sorted(known)}")


def _secret(env_name: object, where: str, environ: Mapping[str, str]) -> str:
    if not isinstance(env_name, str) or not env_name:
        raise SimConfigError(f"{where}: secret_env must name an environment variable")
    value = environ.get(env_name)
    if not value:
        raise SimConfigError(f"{where}: environment variable {env_name} (the secret) is not set")
    return value


def load_sim_config(path: str | Path, environ: Mapping[str, str] | None = None) -> SimConfig:
    """Read and check the file; raises SimConfigError with the first problem found."""
    path = Path(path)
    env = os.environ if environ is None else environ
    try:
        data = _mapping(yaml.safe_load(path.read_text(encoding="utf-8")), str(path))
    except (OSError, yaml.YAMLError) as exc:
        raise SimConfigError(f"{path}: {exc}") from exc
    _unknown(data, _TOP, str(path))
    try:
        feedback_data = dict(_mapping(data.get("feedback"), f"{path}: feedback"))
        _unknown(feedback_data, {f.name for f in fields(Feedback)}, f"{path}: feedback")
        feedback = Feedback(**feedback_data)
        upstream_faults = Faults.from_mapping(_mapping(data.get("upstream_faults"), f"{path}: upstream_faults"))
    except (TypeError, ValueError) as exc:
        raise SimConfigError(f"{path}: {exc}") from exc

    raw = data.get("warehouses") or []
    if isinstance(raw, Mapping):  # keyed by name, like the service's config
        raw = [{"name": name, **_mapping(value, f"{path}: warehouses.{name}")} for name, value in raw.items()]
    if not isinstance(raw, list):
        raise SimConfigError(f"{path}: warehouses must be a list or a mapping")
    warehouses = []
    for i, item in enumerate(raw):
        entry = _mapping(item, f"{path}: warehouses[{i}]")
        where = f"{path}: warehouse {entry.get('name', i)!r}"
        _unknown(entry, _WAREHOUSE, where)
        context: dict[str, Any] = {}
        if entry.get("context_file"):
            ctx_path = path.parent / str(entry["context_file"])
            try:
                context.update(_mapping(yaml.safe_load(ctx_path.read_text(encoding="utf-8")), str(ctx_path)))
            except (OSError, yaml.YAMLError) as exc:
                raise SimConfigError(f"{where}: context_file: {exc}") from exc
        context.update(_mapping(entry.get("context"), f"{where}: context"))
        try:
            warehouses.append(SimWarehouse(
                name=str(entry.get("name", "")), kind=str(entry.get("kind", "")),
                secret=_secret(entry.get("secret_env"), where, env),
                callback_base=str(entry["callback_base"]) if entry.get("callback_base") else None,
                faults=Faults.from_mapping(_mapping(entry.get("faults"), f"{where}: faults")), context=context))
        except (TypeError, ValueError) as exc:
            raise SimConfigError(f"{where}: {exc}") from exc
    upstream_env = data.get("upstream_secret_env")
    upstream_secret = _secret(upstream_env, f"{path}: upstream", env) if upstream_env else None
    seed = data.get("seed", 1)
    if not isinstance(seed, int):
        raise SimConfigError(f"{path}: seed must be an integer")
    return SimConfig(tuple(warehouses), feedback, upstream_secret, upstream_faults, seed)
