"""Module and Parameter: a tree of layers that owns the values training updates."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


class Module:
    """A node in a tree of layers.

    Assigning a ``Parameter`` to an attribute registers it and assigning a
    ``Module`` adds a child, so ``parameters()`` can find every trainable
    value without the subclass listing them.
    """

    _modules: dict[str, Module]
    _parameters: dict[str, Parameter]
    training: bool

    def __init__(self) -> None:
        self.__dict__["_modules"] = {}
        self.__dict__["_parameters"] = {}
        self.training = True

    def modules(self) -> Sequence[Module]:
        """The direct children."""
        return list(self._modules.values())

    def _descendants(self) -> list[Module]:
        """Every module below this one, depth first."""
        found = []
        for child in self._modules.values():
            found.append(child)
            found.extend(child._descendants())
        return found

    def train(self) -> None:
        """Put this module and all its descendants in training mode."""
        for m in [self, *self._descendants()]:
            m.training = True

    def eval(self) -> None:
        """Put this module and all its descendants in evaluation mode."""
        for m in [self, *self._descendants()]:
            m.training = False

    def named_parameters(self) -> Sequence[tuple[str, Parameter]]:
        """``(dotted name, Parameter)`` for the subtree, each Parameter once.

        A Parameter reachable by several paths (shared weights or a shared
        child) keeps the first name found, own parameters before children's.
        """
        named: list[tuple[str, Parameter]] = []
        seen: set[int] = set()

        def visit(module: Module, prefix: str) -> None:
            for name, p in module._parameters.items():
                if id(p) not in seen:
                    seen.add(id(p))
                    named.append((prefix + name, p))
            for name, child in module._modules.items():
                visit(child, f"{prefix}{name}.")

        visit(self, "")
        return named

    def parameters(self) -> Sequence[Parameter]:
        """Every Parameter of the subtree, each once."""
        return [p for _, p in self.named_parameters()]

    def to(self, target: Any) -> Module:
        """Cast every tensor parameter to a dtype (or move it to a backend), in place:
        the Parameter objects stay (so optimisers holding them keep working), their
        values are replaced. Returns the module, as in PyTorch."""
        for p in self.parameters():
            if hasattr(p.value, "to") and hasattr(p.value, "requires_grad_"):
                new = p.value.to(target)
                if new is not p.value:
                    p.update(new.detach())
        return self

    def state_dict(self) -> dict[str, Any]:
        """Parameter values by dotted name, as NumPy copies in their dtype (see ``checkpoint``)."""
        from .checkpoint import state_dict  # checkpoint sits above tensors in the layering

        return state_dict(self)

    def load_state_dict(self, state: Mapping[str, Any], strict: bool = True) -> None:
        """Replace parameter values from ``state``; all or nothing (see ``checkpoint``)."""
        from .checkpoint import load_state_dict

        load_state_dict(self, state, strict)

    def add_parameter(self, k: str, v: Any) -> Parameter:
        """Register ``v`` as a Parameter named ``k`` and return it."""
        p = Parameter(v, k)
        self.__setattr__(k, p)
        return p

    def __setattr__(self, key: str, val: Any) -> None:
        # A name lives in exactly one place, so reassigning it replaces it.
        for store in (self.__dict__.get("_parameters", {}), self.__dict__.get("_modules", {})):
            store.pop(key, None)
        if not isinstance(val, (Parameter, Module)):
            super().__setattr__(key, val)
            return
        registry = self.__dict__.get("_parameters" if isinstance(val, Parameter) else "_modules")
        if registry is None:
            raise AttributeError(
                f"cannot assign {type(val).__name__} '{key}' before Module.__init__() call"
            )
        self.__dict__.pop(key, None)
        registry[key] = val

    def __getattr__(self, key: str) -> Any:
        # Only called when normal lookup fails, i.e. for registered names.
        for store in (self.__dict__.get("_parameters", {}), self.__dict__.get("_modules", {})):
            if key in store:
                return store[key]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{key}'")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        forward = getattr(self, "forward", None)
        if forward is None:
            raise TypeError(f"{type(self).__name__} has no forward() method to call")
        return forward(*args, **kwargs)

    def __repr__(self) -> str:
        lines = []
        for key, child in self._modules.items():
            child_repr = repr(child).replace("\n", "\n  ")
            lines.append(f"({key}): {child_repr}")
        body = "".join(f"\n  {line}" for line in lines)
        return f"{type(self).__name__}({body}\n)" if lines else f"{type(self).__name__}()"


class Parameter:
    """A trainable value held by a Module.

    The value can be of any type; values that track gradients (Tensors) are
    switched on for tracking and given the parameter's name.
    """

    def __init__(self, x: Any, name: str | None = None) -> None:
        self.name = name
        self.update(x)

    def update(self, x: Any) -> None:
        """Replace the value, e.g. after an optimiser step."""
        self.value = x
        if hasattr(x, "requires_grad_"):
            x.requires_grad_(True)
            if self.name:
                x.name = self.name

    def __repr__(self) -> str:
        return repr(self.value)

    def __str__(self) -> str:
        return str(self.value)
