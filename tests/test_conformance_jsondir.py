"""The adapter conformance suite on the built-in `jsondir` platform, and the Writer suite on the
in-memory writer."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bridge_agent.platforms.base import FieldRef, WriteField
from bridge_agent.platforms.jsondir import JsonDir
from bridge_agent.testing.catalog import make_product, write_product
from bridge_agent.testing.conformance import (
    ConformanceSubject,
    PlatformConformance,
    WriterConformance,
    WriterSubject,
)
from bridge_agent.testing.fake_writer import FakeWriter


class TestJsonDirConformance(PlatformConformance):
    @pytest.fixture
    def subject(self, tmp_path: Path) -> ConformanceSubject:
        catalog = tmp_path / "catalog"
        catalog.mkdir()
        for i in range(1, 251):  # three pages of 100
            write_product(catalog, make_product(i))
        platform = JsonDir("main", catalog, webhook_secret="whsec-conformance")

        async def touch(product_id: str) -> datetime:
            at = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)
            product = make_product(int(product_id))
            write_product(catalog, replace(product, updated_at="2026-11-23T12:00:00Z"))
            return at

        return ConformanceSubject(
            platform=platform,
            expected_ids={str(i) for i in range(1, 251)},
            missing_id="99999",
            touch=touch,
            webhook_headers={"X-Signature": "bm90LXRoZS1zaWduYXR1cmU="},
        )


class TestFakeWriterConformance(WriterConformance):
    """The Writer contract on the in-memory writer the downstream tests will use."""

    @pytest.fixture
    def writer(self) -> WriterSubject:
        fake = FakeWriter(["1", "2"], fields=[f for f in WriteField if f is not WriteField.JSONLD])
        fake.merchant_edit(FieldRef("1", WriteField.SEO_TITLE), "Merchant's title")
        return WriterSubject(
            writer=fake,
            writable=[
                FieldRef("1", WriteField.SEO_TITLE),
                FieldRef("2", WriteField.SEO_DESCRIPTION),
                FieldRef("2", WriteField.IMAGE_ALT, image="77"),
            ],
            unsupported=FieldRef("1", WriteField.JSONLD),
        )
