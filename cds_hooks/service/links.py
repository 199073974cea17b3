"""The card link policy, for EHRs that strip links they do not know (Oracle Health keeps an allow-list).

Applied to the finished card, so the engine's card stays the same everywhere (batch, sandbox, service):

- no setting: links as the engine made them;
- ``CRAMP_LINK_HOSTS``: links (and ``source.url``) to other hosts are left off; a host allows its subdomains;
- ``CRAMP_EVIDENCE_PAGE``: every link is replaced by one link to that page, and ``source.url`` points there.
"""
from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

EVIDENCE_LABEL = "Evidence and sources for this card"


@dataclass(frozen=True)
class LinkPolicy:
    hosts: tuple[str, ...] = ()
    evidence_page: str | None = None

    def allows(self, url: str) -> bool:
        host = (urlsplit(url).hostname or "").lower()
        return any(host == h or host.endswith("." + h) for h in self.hosts)

    def apply(self, card: dict) -> dict:
        """The card with its links and source URL under this policy (changed in place and returned)."""
        source = card.get("source") or {}
        if self.evidence_page:
            if card.get("links"):
                card["links"] = [{"label": EVIDENCE_LABEL, "url": self.evidence_page, "type": "absolute"}]
            if "url" in source:
                source["url"] = self.evidence_page
        elif self.hosts:
            kept = [link for link in card.get("links") or () if self.allows(link.get("url", ""))]
            if kept:
                card["links"] = kept
            else:
                card.pop("links", None)  # no empty arrays (checklist G2)
            if "url" in source and not self.allows(source["url"]):
                del source["url"]
        return card
