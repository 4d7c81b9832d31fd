"""Helpers of the lab tests that drive the operator's own Kubernetes client against the emulated API server."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from modelrollout.kube import Kube, load_configuration


def with_kube(kubeconfig: str, scenario: Callable[[Kube], Awaitable[Any]], kube_class: type[Kube] = Kube) -> None:
    """Run `scenario(kube)` with the operator's client for `kubeconfig`, closed afterwards."""
    async def run() -> None:
        kube = kube_class(load_configuration(kubeconfig))
        try:
            await scenario(kube)
        finally:
            await kube.close()

    asyncio.run(run())


class RacingKube(Kube):
    """A real client whose first PUT is preceded by another writer's edit of the same object."""

    other_edit: dict | None = None

    async def replace(self, path_: str, body: dict[str, Any]) -> dict[str, Any]:
        if self.other_edit is not None:
            edit, self.other_edit = self.other_edit, None
            await self.merge_patch(path_, edit)
        return await super().replace(path_, body)
