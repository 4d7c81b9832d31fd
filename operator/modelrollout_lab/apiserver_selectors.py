"""Label and field selectors on lists, watches and collection deletes (the lab's API server)."""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from modelrollout_lab import apiserver_logic as logic
from modelrollout_lab.apiserver_resources import ResourceDef, bad_request


class Selectors:
    """
    ``labelSelector`` and ``fieldSelector`` as kube-apiserver reads them.

    kmock's emulator filters lists and watches by namespace and name only. kube-apiserver also
    filters by labels (``=``, ``==``, ``!=``, ``in``, ``notin``, ``key``, ``!key``) and by fields
    (``metadata.name=x``, any dotted field, ``=``/``!=``), answers a malformed selector with 400,
    and sorts a list by namespace and name. Small enough to be offered upstream to kmock as
    selector support in its list and watch fallbacks.
    """

    def _matcher(self, ns: str | None, params: Mapping[str, str]) -> Callable[[dict[str, Any]], bool]:
        """Whether an object is in the namespace (None: any) and matches the request's selectors."""
        try:
            lreqs = logic.parse_label_selector(params.get('labelSelector'))
            freqs = logic.parse_field_selector(params.get('fieldSelector'))
        except logic.SelectorError as e:
            raise bad_request(str(e)) from None

        def matches(obj: dict[str, Any]) -> bool:
            meta = obj['metadata']
            if ns is not None and meta.get('namespace') != ns:
                return False
            if lreqs and not logic.match_labels(lreqs, meta.get('labels')):
                return False
            return not freqs or logic.match_fields(freqs, obj)
        return matches

    def _select(self, rdef: ResourceDef, ns: str | None, params: Mapping[str, str]) -> list[dict[str, Any]]:
        matches = self._matcher(ns, params)
        items = [obj for (ons, _), obj in self._stored_items(rdef)  # type: ignore[attr-defined]
                 if (ns is None or ons == ns) and matches(obj)]
        items.sort(key=lambda o: (o['metadata'].get('namespace') or '', o['metadata']['name']))
        return items
