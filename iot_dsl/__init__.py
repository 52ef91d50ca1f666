"""iot_dsl: YAML IoT workflows validated, compiled to cloud/edge plans, and run by an interpreter.

The facade::

    from iot_dsl import compile_file, load_plan, Engine

    plan = compile_file("workflows/plant.yaml")      # validate + compile (raises DslErrors with positions)
    engine = Engine(plan)                            # virtual clock, memory transport, memory store
    records = engine.push(events)                    # a batch of event dicts in, records out
"""

from __future__ import annotations

from .compiler import compile_file, compile_text
from .errors import CompileError, DslError, DslErrors, ExprError, LoadError, PlanError, SchemaError, SourceSpan
from .plan import Plan, load_plan
from .runtime.engine import Engine, EngineStats

__all__ = [
    "compile_file",
    "compile_text",
    "load_plan",
    "Plan",
    "Engine",
    "EngineStats",
    "DslError",
    "DslErrors",
    "LoadError",
    "SchemaError",
    "ExprError",
    "CompileError",
    "PlanError",
    "SourceSpan",
    "__version__",
]

__version__ = "0.1.0"
