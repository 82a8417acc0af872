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
- `verify_webhook()` refuses a body whose signature is wrong, with BadWebhook (401);
- protocol v2: the declared capabilities are known names and backed by the methods they promise;
  `fetch_products()` agrees with `fetch_product()` for found, missing and odd ids alike, with or
  without `batch_fetch`; `resolve_webhook()` names the products of a delivery; `aclose()` works.

`WriterConformance` does the same for the downstream `Writer` protocol (subclass it with a
`writer` fixture): reads answer what writes applied, a write whose expected value is stale is a
conflict and changes nothing, an undeclared field is unsupported, and there is exactly one result
per write, in order. `testing/fake_writer.py` is an in-memory Writer that passes it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pytest

from bridge_agent.errors import BadWebhook, PlatformAuthFailed
from bridge_agent.model import Product
from bridge_agent.platforms.base import (
    Capability,
    FieldRef,
    FieldWrite,
    Platform,
    WebhookDelivery,
    WebhookRegistrar,
    WriteField,
    Writer,
    capabilities_of,
    fetch_each,
)

# The method each capability promises (the core calls it only when it is declared).
PROMISES: Mapping[Capability, str] = {
    Capability.MODIFIED_SINCE: "modified_since",
    Capability.PRODUCT_IDS: "product_ids",
    Capability.BATCH_FETCH: "fetch_products",
    Capability.WEBHOOKS: "resolve_webhook",
}


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

    # -- protocol v2 ------------------------------------------------------------------------

    async def test_capabilities_are_declared_and_kept(self, subject: ConformanceSubject) -> None:
        declared = getattr(type(subject.platform), "capabilities", None)
        assert declared is not None, "a v2 adapter declares `capabilities` on its class"
        offers = capabilities_of(subject.platform)
        assert all(isinstance(c, Capability) for c in offers)
        for capability, method in PROMISES.items():
            if capability in offers:
                assert callable(getattr(subject.platform, method, None)), (capability, method)
        if Capability.WEBHOOK_REGISTRATION in offers:
            assert isinstance(subject.platform, WebhookRegistrar)
        if offers & {Capability(f"write.{f.value}") for f in WriteField}:
            assert isinstance(subject.platform, Writer)

    async def test_fetch_products_agrees_with_fetch_product(
        self, subject: ConformanceSubject
    ) -> None:
        present = sorted(subject.expected_ids)[:7]
        asked = [*present, subject.missing_id, present[0], "../etc", ""]
        result = await subject.platform.fetch_products(asked)
        one_by_one = await fetch_each(subject.platform, asked, concurrency=4)
        assert set(result.found) == set(present) == set(one_by_one.found)
        for product_id in present:
            assert result.found[product_id].to_dict() == one_by_one.found[product_id].to_dict()
        assert result.missing == one_by_one.missing >= {subject.missing_id, "../etc", ""}
        assert not result.failed
        every = set(result.found) | set(result.missing) | set(result.failed)
        assert every == set(asked), "each asked id is answered exactly once"

    async def test_fetch_products_of_nothing_asks_nothing(
        self, subject: ConformanceSubject
    ) -> None:
        result = await subject.platform.fetch_products([])
        assert not result.found
        assert not result.missing
        assert not result.failed

    async def test_resolve_names_the_delivery_s_products(self, subject: ConformanceSubject) -> None:
        if Capability.WEBHOOKS not in capabilities_of(subject.platform):
            pytest.skip("this platform sends no webhooks")
        product_id = sorted(subject.expected_ids)[0]
        delivery = WebhookDelivery(
            kind="product", topic="product.updated", product_ids=(product_id,)
        )
        assert product_id in await subject.platform.resolve_webhook(delivery)

    async def test_aclose_can_be_called(self, subject: ConformanceSubject) -> None:
        await subject.platform.aclose()


@dataclass
class WriterSubject:
    """A Writer under test, with products and fields it can write, and one it cannot."""

    writer: Writer
    writable: list[FieldRef]  # fields of existing products, each declared as writable
    unsupported: FieldRef | None = None  # a field of an existing product it does not write
    missing_product: str = "999999"


class WriterConformance:
    """Subclass and provide a `writer` fixture returning a WriterSubject."""

    async def test_a_write_with_the_current_value_is_applied_and_read_back(
        self, writer: WriterSubject
    ) -> None:
        refs = writer.writable
        before = await writer.writer.read_fields(refs)
        writes = [FieldWrite(r, before.get(r), _new_value(r, n)) for n, r in enumerate(refs)]
        results = await writer.writer.write_fields(writes)
        assert [r.ref for r in results] == [w.ref for w in writes], "one result per write, in order"
        assert [r.outcome for r in results] == ["applied"] * len(writes)
        after = await writer.writer.read_fields(refs)
        assert [after[w.ref] for w in writes] == [w.value for w in writes]

    async def test_a_stale_expected_value_is_a_conflict_and_changes_nothing(
        self, writer: WriterSubject
    ) -> None:
        ref = writer.writable[0]
        current = (await writer.writer.read_fields([ref]))[ref]
        (result,) = await writer.writer.write_fields(
            [FieldWrite(ref, "not what the store holds", "the hub's value")]
        )
        assert result.outcome == "conflict"
        assert result.current == current
        assert (await writer.writer.read_fields([ref]))[ref] == current

    async def test_an_unsupported_field_says_so(self, writer: WriterSubject) -> None:
        if writer.unsupported is None:
            pytest.skip("this writer writes every field")
        (result,) = await writer.writer.write_fields([FieldWrite(writer.unsupported, None, "x")])
        assert result.outcome == "unsupported"

    async def test_a_missing_product_fails_its_writes_only(self, writer: WriterSubject) -> None:
        ref = writer.writable[0]
        gone = FieldRef(writer.missing_product, ref.field, ref.image)
        current = (await writer.writer.read_fields([ref]))[ref]
        results = await writer.writer.write_fields(
            [FieldWrite(gone, None, "x"), FieldWrite(ref, current, _new_value(ref, 7))]
        )
        assert [r.outcome for r in results] == ["failed", "applied"]
        assert results[0].message


def _new_value(ref: FieldRef, n: int) -> Any:
    if ref.field is WriteField.JSONLD:
        return {"@context": "https://schema.org", "@type": "Product", "name": f"written {n}"}
    return f"written {n} for {ref.product}"
