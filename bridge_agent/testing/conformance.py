"""Adapter conformance suite: what every platform adapter must do, whatever its store.

Use it from a test module (the Singer SDK's `get_tap_test_class` idea): subclass
`PlatformConformance` and provide the fixtures it asks for, then every test below runs against
your adapter and your store (a simulator on loopback, or a test store).

    class TestWooCommerce(PlatformConformance):
        @pytest.fixture
        async def subject(self, ...) -> ConformanceSubject:
            ...

The suite checks the contract the agent relies on, not a platform's details:
- `check()` passes against a healthy store, and a wrong credential raises PlatformAuthFailed;
- `catalog()` yields every product exactly once, and resumes from any page token without
  repeating or skipping what came before;
- `fetch_product()` agrees with the catalog, and answers None for an id that does not exist;
- `product_ids()` lists exactly the catalog's ids;
- `modified_since()` includes a product modified exactly at the boundary time;
- `verify_webhook()` refuses a body whose signature is wrong, with BadWebhook (401).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

import pytest

from bridge_agent.errors import BadWebhook, PlatformAuthFailed
from bridge_agent.model import Product
from bridge_agent.platforms.base import Platform


@dataclass
class ConformanceSubject:
    """An adapter under test and the facts about its store that the suite compares against."""

    platform: Platform
    expected_ids: set[str]  # every product id the store has
    missing_id: str  # an id the store does not have
    with_bad_credentials: Platform | None = None  # the same store, a wrong key (None: skip)
    # Touch one product so that its modification time is exactly the returned datetime (UTC).
    touch: Callable[[str], Awaitable[datetime]] | None = None
    webhook_headers: Mapping[str, str] = field(default_factory=dict)  # with a wrong signature


class PlatformConformance:
    """Subclass and provide a `subject` fixture returning a ConformanceSubject."""

    async def test_check_passes(self, subject: ConformanceSubject) -> None:
        await subject.platform.check()

    async def test_wrong_credentials_raise_auth_failed(self, subject: ConformanceSubject) -> None:
        if subject.with_bad_credentials is None:
            pytest.skip("this store has no credentials to get wrong")
        with pytest.raises(PlatformAuthFailed):
            await subject.with_bad_credentials.check()

    async def test_catalog_yields_every_product_once(self, subject: ConformanceSubject) -> None:
        seen: list[str] = []
        tokens: list[str | None] = []
        async for page in subject.platform.catalog():
            seen += [p.id for p in page.products]
            tokens.append(page.next_token)
        assert len(seen) == len(set(seen)), "a product came twice"
        assert set(seen) == subject.expected_ids
        assert tokens[-1] is None, "the last page must have no next token"

    async def test_catalog_resumes_from_a_token(self, subject: ConformanceSubject) -> None:
        first: list[str] = []
        token: str | None = None
        async for page in subject.platform.catalog():
            first += [p.id for p in page.products]
            token = page.next_token
            break
        if token is None:
            pytest.skip("the catalog fits in one page")
        rest: list[str] = []
        async for page in subject.platform.catalog(token):
            rest += [p.id for p in page.products]
        assert not set(first) & set(rest), "resuming repeated products"
        assert set(first) | set(rest) == subject.expected_ids, "resuming skipped products"

    async def test_fetch_agrees_with_the_catalog(self, subject: ConformanceSubject) -> None:
        listed: dict[str, Product] = {}
        async for page in subject.platform.catalog():
            listed.update({p.id: p for p in page.products})
            if len(listed) >= 5:
                break
        for product_id, product in list(listed.items())[:5]:
            fetched = await subject.platform.fetch_product(product_id)
            assert fetched is not None
            assert fetched.to_dict() == product.to_dict()

    async def test_fetch_missing_is_none(self, subject: ConformanceSubject) -> None:
        assert await subject.platform.fetch_product(subject.missing_id) is None

    async def test_product_ids_list_the_catalog(self, subject: ConformanceSubject) -> None:
        ids: list[str] = []
        async for chunk in subject.platform.product_ids():
            ids += chunk
        assert set(ids) == subject.expected_ids
        assert len(ids) == len(set(ids))

    async def test_modified_since_includes_the_boundary(self, subject: ConformanceSubject) -> None:
        if subject.touch is None:
            pytest.skip("this store cannot set a product's modification time")
        product_id = sorted(subject.expected_ids)[0]
        at = await subject.touch(product_id)
        found: list[str] = []
        async for page in subject.platform.modified_since(at):
            found += [p.id for p in page]
        assert product_id in found, "a product modified exactly at `since` was missed"

    async def test_bad_webhook_signature_is_refused(self, subject: ConformanceSubject) -> None:
        body = b'{"id": 1}'
        with pytest.raises(BadWebhook) as raised:
            subject.platform.verify_webhook(dict(subject.webhook_headers), body)
        assert raised.value.status == 401
