"""A realistic, seeded catalog: the same seed gives the same store, byte for byte.

What it contains, and why each oddity is there (every one is something an adapter must survive):

- simple and variable products (2-5 variations each, over Size and/or Color), ids interleaved with
  attachment ids as in `wp_posts`, so ids are neither contiguous nor per type;
- statuses publish/draft/private/pending; drafts and pending products have no slug yet and a
  `?post_type=product&p=ID` permalink;
- stock statuses instock/outofstock/onbackorder, some with managed stock and quantities;
- products with no image, with several, images shared by two products (one ALT for both), images
  without ALT text; products with no price (`""`); sale prices; whole-number prices ("25");
- categories with parent chains (Clothing > Men > Shirts), tags;
- SEO meta the way plugins store it: mostly Yoast (`_yoast_wpseo_title`, `_yoast_wpseo_metadesc`,
  sometimes a `%%title%%` template), some Rank Math, AIOSEO and SEOPress, some none, plus
  unrelated plugin meta;
- names with HTML entities (`&amp;`) and non-ASCII characters, duplicated names (unique slugs);
- optionally duplicate SKUs (stores with the uniqueness check disabled, or old imports);
- dates over the two years before `epoch`, a few "import bursts" where many products share one
  modification second (the `modified_after` tie case).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from bridge_agent.simulators.woocommerce.catalog import Catalog
from bridge_agent.simulators.woocommerce.model import Attachment, Attribute, Item, Term
from bridge_agent.simulators.woocommerce.render import slugify

_TREE: tuple[tuple[str, ...], ...] = (
    ("Clothing", "Men", "Shirts"),
    ("Clothing", "Men", "Jackets"),
    ("Clothing", "Women", "Dresses"),
    ("Clothing", "Women", "Knitwear"),
    ("Clothing", "Accessories"),
    ("Shoes", "Sneakers"),
    ("Shoes", "Boots"),
    ("Home & Garden", "Kitchen", "Cookware"),
    ("Home & Garden", "Kitchen", "Tableware"),
    ("Home & Garden", "Lighting"),
    ("Electronics", "Audio", "Headphones"),
    ("Electronics", "Accessories"),
    ("Bags",),
)
_NOUNS = {
    "Shirts": ("Shirt", "Oxford Shirt", "Polo", "T-Shirt"),
    "Jackets": ("Jacket", "Parka", "Bomber", "Rain Coat"),
    "Dresses": ("Dress", "Maxi Dress", "Wrap Dress"),
    "Knitwear": ("Sweater", "Cardigan", "Hoodie"),
    "Accessories": ("Scarf", "Beanie", "Belt", "Cable", "Charger"),
    "Sneakers": ("Sneaker", "Runner", "Trainer"),
    "Boots": ("Boot", "Chelsea Boot"),
    "Cookware": ("Pan", "Dutch Oven", "Saucepan"),
    "Tableware": ("Mug", "Bowl", "Plate Set"),
    "Lighting": ("Lamp", "Pendant Light"),
    "Headphones": ("Headphones", "Earbuds"),
    "Bags": ("Backpack", "Tote", "Duffel"),
}
_ADJECTIVES = (
    "Classic", "Organic", "Vintage", "Slim", "Cozy", "Rugged", "Light", "Urban", "Nordic",
    "Café", "Crème", "Alpine", "Coastal", "Merino", "Premium",
)  # fmt: skip
_MATERIALS = ("Cotton", "Linen", "Wool", "Leather", "Cast Iron", "Ceramic", "Bamboo", "Canvas")
_TAGS = (
    "new", "sale", "bestseller", "eco", "gift", "limited", "summer", "winter", "handmade",
    "vegan", "classic", "outdoor",
)  # fmt: skip
_SIZES = ("XS", "S", "M", "L", "XL", "XXL")
_COLORS = ("Black", "White", "Navy", "Olive", "Red", "Sand")
_PARAGRAPHS = tuple(
    f"<p>{text}</p>\n"
    for text in (
        "Made to last, designed for every day.",
        "Crafted from responsibly sourced materials in small batches.",
        "A timeless piece that pairs with everything in your wardrobe.",
        "Easy care: machine washable at 30 &deg;C.",
        "Our bestseller, now in new colours.",
        "Ships in recycled packaging within 2 business days.",
        "Lightweight, breathable and built for the outdoors.",
        "Dishwasher safe. Suitable for all hob types, including induction.",
    )
)
_LISTS = (
    "<ul>\n<li>Regular fit</li>\n<li>100% cotton</li>\n</ul>\n",
    "<ul>\n<li>Free returns</li>\n<li>2 year warranty</li>\n</ul>\n",
)
_DIMENSIONS = (("", "", ""), ("30", "20", "5"), ("40", "30", "10"), ("12", "12", "9"))
_WEIGHTS = ("", "0.2", "0.5", "1", "1.5", "2.3")
_JUNK_META: tuple[tuple[str, object], ...] = (
    ("_wpcom_is_markdown", "1"),
    ("_last_editor_used_jetpack", "classic-editor"),
    ("fb_product_group_id", "1234567890"),
    ("_product_addons", []),
)
YEAR = 365 * 86400


@dataclass(frozen=True, slots=True)
class Shape:
    """Knobs of the generated catalog (fractions of products)."""

    variable_ratio: float = 0.2
    duplicate_skus: bool = False
    no_image_ratio: float = 0.1
    no_price_ratio: float = 0.05
    shared_image_ratio: float = 0.03
    burst_ratio: float = 0.05


def _categories(cat: Catalog) -> list[int]:
    """The category tree; returns the leaf ids products are filed under."""
    by_path: dict[tuple[str, ...], int] = {}
    leaves: list[int] = []
    uncategorized = Term(cat.new_term_id(), "Uncategorized", "uncategorized")
    cat.categories[uncategorized.id] = uncategorized
    for path in _TREE:
        for depth in range(1, len(path) + 1):
            prefix = path[:depth]
            if prefix in by_path:
                continue
            parent = by_path.get(prefix[:-1], 0)
            name = prefix[-1].replace("&", "&amp;")  # WordPress stores term names escaped
            slug = slugify(prefix[-1])
            if any(t.slug == slug for t in cat.categories.values()):
                slug = f"{slug}-{slugify(prefix[-2])}"  # "accessories-electronics", as WP would
            term = Term(cat.new_term_id(), name, slug, parent)
            cat.categories[term.id] = term
            by_path[prefix] = term.id
        leaves.append(by_path[path])
    return leaves


def _seo_meta(rng: random.Random, cat: Catalog, name: str) -> list[tuple[int, str, object]]:
    roll = rng.random()
    plain = name.replace("&amp;", "&")
    rows: list[tuple[str, object]]
    if roll < 0.55:
        title = "%%title%% %%sep%% %%sitename%%" if rng.random() < 0.3 else f"{plain} | Shop"
        rows = [("_yoast_wpseo_title", title)]
        if rng.random() < 0.85:
            rows.append(("_yoast_wpseo_metadesc", f"Buy the {plain} online. Free shipping."))
        if rng.random() < 0.4:
            rows.append(("_yoast_wpseo_focuskw", plain.split()[-1].lower()))
    elif roll < 0.70:
        rows = [
            ("rank_math_title", f"{plain} %sep% %sitename%"),
            ("rank_math_description", f"{plain}: quality you can feel."),
            ("rank_math_focus_keyword", plain.split()[-1].lower()),
        ]
    elif roll < 0.76:
        rows = [("_aioseo_title", f"{plain} - Shop"), ("_aioseo_description", f"The {plain}.")]
    elif roll < 0.81:
        rows = [("_seopress_titles_title", plain), ("_seopress_titles_desc", f"Get the {plain}.")]
    else:
        rows = []
    if rng.random() < 0.25:
        rows.append(rng.choice(_JUNK_META))
    return [(cat.new_meta_id(), k, v) for k, v in rows]


def _price(rng: random.Random) -> tuple[str, str]:
    cents = rng.randrange(500, 25_000)
    regular = str(cents // 100) if rng.random() < 0.15 else f"{cents // 100}.{cents % 100:02d}"
    sale = ""
    if rng.random() < 0.2:
        off = cents * rng.choice((70, 75, 80, 90)) // 100
        sale = f"{off // 100}.{off % 100:02d}"
    return regular, sale


def _stock(rng: random.Random, item: Item) -> None:
    if rng.random() < 0.4:
        item.manage_stock = True
        item.stock_quantity = rng.choice((0, 0, 1, 3, 5, 12, 40, 150))
        item.backorders = rng.choice(("no", "no", "no", "notify"))
        if item.stock_quantity > 0:
            item.stock_status = "instock"
        else:
            item.stock_status = "onbackorder" if item.backorders != "no" else "outofstock"
    else:
        item.stock_status = rng.choices(("instock", "outofstock", "onbackorder"), (80, 15, 5))[0]


def populate(cat: Catalog, rng: random.Random, *, products: int, epoch: int, shape: Shape) -> None:
    leaves = _categories(cat)
    tag_ids = []
    for tag in _TAGS:
        term = Term(cat.new_term_id(), tag.capitalize(), tag)
        cat.tags[term.id] = term
        tag_ids.append(term.id)
    size_attr, color_attr = 1, 2  # global attributes pa_size, pa_color
    start = epoch - 2 * YEAR
    created = sorted(rng.randrange(start, epoch - 86400) for _ in range(products))
    bursts = [rng.randrange(epoch - YEAR, epoch) for _ in range(3)]
    skus: list[str] = []
    last_attachment: int | None = None
    for n, born in enumerate(created):
        leaf = rng.choice(leaves)
        leaf_name = cat.categories[leaf].name
        noun = rng.choice(_NOUNS.get(leaf_name, ("Item",)))
        name = f"{rng.choice(_ADJECTIVES)} {rng.choice(_MATERIALS)} {noun}"
        if rng.random() < 0.03:
            name = f"{name} &amp; Care Kit"
        status = rng.choices(("publish", "draft", "private", "pending"), (85, 7, 4, 4))[0]
        if rng.random() < shape.burst_ratio:
            modified = max(born, rng.choice(bursts))
        else:
            modified = rng.randrange(born, epoch)
        variable = rng.random() < shape.variable_ratio
        item = Item(
            id=cat.new_post_id(),
            type="variable" if variable else "simple",
            name=name,
            slug=cat.unique_slug(slugify(name)) if status in ("publish", "private") else "",
            status=status,
            created=born,
            modified=modified,
            description="".join(rng.sample(_PARAGRAPHS, rng.randrange(0, 3)))
            + (rng.choice(_LISTS) if rng.random() < 0.3 else ""),
            short_description=rng.choice(_PARAGRAPHS) if rng.random() < 0.6 else "",
            featured=rng.random() < 0.05,
            weight=rng.choice(_WEIGHTS),
            dimensions=rng.choice(_DIMENSIONS),
            total_sales=rng.randrange(0, 500),
            tax_class=rng.choice(("", "", "", "reduced-rate")),
        )
        sku = "" if rng.random() < 0.05 else f"WC-{n + 1:06d}"
        if shape.duplicate_skus and skus and rng.random() < 0.02:
            sku = rng.choice(skus)
        item.sku = sku
        if sku:
            skus.append(sku)
        if rng.random() < 0.15:
            count = rng.randrange(1, 40)
            item.rating_count = count
            item.average_rating = f"{rng.uniform(2.5, 5.0):.2f}"
        cats = [leaf]
        if rng.random() < 0.3:  # many stores tick the parent category as well
            parent = cat.categories[leaf].parent
            if parent:
                cats.append(parent)
        item.categories = tuple(cats)
        item.tags = tuple(rng.sample(tag_ids, rng.randrange(0, 3)))
        # Images: attachment posts take ids from the same sequence as products.
        images: list[int] = []
        if rng.random() >= shape.no_image_ratio:
            if last_attachment is not None and rng.random() < shape.shared_image_ratio:
                images.append(last_attachment)
            for k in range(rng.choices((1, 2, 3, 4), (55, 25, 12, 8))[0]):
                att_id = cat.new_post_id()
                year_month = (
                    f"{2024 + (born - start) // YEAR}/{(born // (30 * 86400)) % 12 + 1:02d}"
                )
                base = item.slug or slugify(name)
                att = Attachment(
                    id=att_id,
                    src=f"/wp-content/uploads/{year_month}/{base}-{k + 1}.jpg",
                    name=f"{base}-{k + 1}",
                    alt=name if rng.random() < 0.6 else "",
                    created=born,
                    modified=born,
                )
                cat.attachments[att_id] = att
                images.append(att_id)
            last_attachment = images[-1]
        item.image_ids = tuple(images)
        item.meta = tuple(_seo_meta(rng, cat, name))
        if variable:
            _variations(cat, rng, item, size_attr, color_attr, shape)
        else:
            if rng.random() >= shape.no_price_ratio:
                item.regular_price, item.sale_price = _price(rng)
            _stock(rng, item)
        cat.add(item)


def _variations(
    cat: Catalog, rng: random.Random, item: Item, size_attr: int, color_attr: int, shape: Shape
) -> None:
    count = rng.randrange(2, 6)
    sizes = tuple(rng.sample(_SIZES, min(count, len(_SIZES))))
    colors = tuple(rng.sample(_COLORS, 2)) if count > 3 and rng.random() < 0.5 else ()
    attributes = [Attribute(size_attr, "Size", sizes, 0, True, True)]
    combos: list[tuple[tuple[int, str, str], ...]] = [((size_attr, "Size", s),) for s in sizes]
    if colors:
        attributes.append(Attribute(color_attr, "Color", colors, 1, True, True))
        pairs: list[tuple[tuple[int, str, str], ...]] = [
            ((size_attr, "Size", s), (color_attr, "Color", c)) for s in sizes for c in colors
        ]
        combos = pairs[:count]
    item.attributes = tuple(attributes)
    regular, sale = ("", "") if rng.random() < shape.no_price_ratio else _price(rng)
    kids: list[int] = []
    for k, options in enumerate(combos):
        bump = 0 if rng.random() < 0.6 else rng.choice((100, 200, 500))
        v_regular = regular
        if regular and bump:
            v_regular = f"{float(regular) + bump / 100:.2f}"
        variation = Item(
            id=cat.new_post_id(),
            type="variation",
            name="",
            slug="",
            status="private" if rng.random() < 0.05 else "publish",
            created=item.created + k + 1,
            modified=max(item.created + k + 1, item.modified - rng.randrange(0, 3600)),
            parent_id=item.id,
            sku=f"{item.sku}-{'-'.join(o for _, _, o in options)}" if item.sku else "",
            regular_price=v_regular,
            sale_price=sale if v_regular == regular else "",
            weight=item.weight,
            dimensions=item.dimensions,
            menu_order=k,
            options=options,
        )
        _stock(rng, variation)
        if item.image_ids and rng.random() < 0.5:
            variation.image_ids = (rng.choice(item.image_ids),)
        cat.add(variation)
        kids.append(variation.id)
    item.variations = tuple(kids)
    item.stock_status = (
        "instock" if any(cat.items[v].stock_status == "instock" for v in kids) else "outofstock"
    )
