"""The `/wp-json/wc/v3` webhook routes (platforms.md 1.8) and the few store settings an adapter
reads (currency, timezone), plus the unauthenticated `/wp-json/` index.

Webhooks follow the v3 controller: `topic` and `delivery_url` are required and checked
(`woocommerce_rest_shop_webhook_invalid_topic` / `..._invalid_delivery_url`, 400), `secret` is
write-only, `status` is active|paused|disabled, deleting needs `force=true` (else 501
`woocommerce_rest_trash_not_supported`), and creating sends the ping before answering.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from bridge_agent.simulators.core.control import json_response
from bridge_agent.simulators.woocommerce.model import (
    REST_PREFIX,
    WooError,
    encode,
    invalid_params,
    wall,
)
from bridge_agent.simulators.woocommerce.rest import (
    SIM,
    Params,
    Problems,
    origin,
    page_response,
    params_of,
    permit,
    read_body,
    read_paging,
)
from bridge_agent.simulators.woocommerce.webhooks import WEBHOOK_STATUSES, Webhook, valid_topic

# -- webhooks -----------------------------------------------------------------------------------


def _webhook_changes(body: Any, *, creating: bool) -> dict[str, Any]:
    body = body if isinstance(body, dict) else {}
    problems: Problems = {}
    out: dict[str, Any] = {}
    for key in ("name", "topic", "delivery_url", "secret", "status"):
        if key in body:
            if not isinstance(body[key], str):
                problems[key] = ("rest_invalid_type", f"{key} is not of type string.")
            else:
                out[key] = body[key]
    if "status" in out and out["status"] not in WEBHOOK_STATUSES:
        problems["status"] = (
            "rest_not_in_enum",
            f"status is not one of {', '.join(WEBHOOK_STATUSES)}.",
        )
    if problems:
        raise invalid_params(problems)
    if creating or "topic" in out:
        if not valid_topic(out.get("topic", "").lower()):
            raise WooError(
                400,
                "woocommerce_rest_shop_webhook_invalid_topic",
                "Webhook topic is required and must be valid.",
            )
        out["topic"] = out["topic"].lower()
    if creating or "delivery_url" in out:
        url = out.get("delivery_url", "")
        if not url.startswith(("http://", "https://")) or len(url.split("/")) < 3:
            raise WooError(
                400,
                "woocommerce_rest_shop_webhook_invalid_delivery_url",
                "Webhook delivery URL must be a valid URL starting with http:// or https://.",
            )
    return out


def _webhook(request: web.Request) -> Webhook | None:
    return request.app[SIM].webhooks.webhooks.get(int(request.match_info["id"]))


def _webhook_body(request: web.Request, hook: Webhook) -> bytes:
    cat = request.app[SIM].catalog
    return encode(hook.doc(cat.site_url, cat.utc_offset))


async def list_webhooks(request: web.Request) -> web.Response:
    sim = request.app[SIM]
    values = params_of(request)
    p = Params(values)
    paging = read_paging(p)
    status = p.choice("status", "all", ("all", *WEBHOOK_STATUSES))
    order = p.choice("order", "desc", ("asc", "desc"))
    p.check()
    permit(request, "list")
    hooks = [h for h in sim.webhooks.webhooks.values() if status in ("all", h.status)]
    hooks.sort(key=lambda h: (h.created, h.id), reverse=order == "desc")
    by_id = {h.id: h for h in hooks}
    return page_response(
        request,
        values,
        [h.id for h in hooks],
        paging,
        p.fields(),
        lambda i: _webhook_body(request, by_id[i]),
        lambda i: by_id[i].doc(sim.catalog.site_url, sim.catalog.utc_offset),
    )


async def create_webhook(request: web.Request) -> web.Response:
    sim = request.app[SIM]
    changes = _webhook_changes(await read_body(request), creating=True)
    permit(request, "create")
    now = sim.clock.now()
    hook = Webhook(
        id=sim.webhooks.new_id(),
        name=changes.get("name") or f"Webhook created on {wall(now + sim.catalog.utc_offset)}",
        status=changes.get("status", "active"),
        topic=changes["topic"],
        delivery_url=changes["delivery_url"],
        # Without a secret WooCommerce generates one the caller never sees (write-only field).
        secret=changes.get("secret") or f"{sim.rng.getrandbits(200):050x}",
        created=now,
        modified=now,
    )
    sim.webhooks.webhooks[hook.id] = hook
    await sim.webhooks.ping(hook)  # synchronous in WooCommerce too; the result is ignored
    resp = json_response(_webhook_body(request, hook), status=201)
    resp.headers["Location"] = f"{origin(request)}{REST_PREFIX}/webhooks/{hook.id}"
    return resp


async def get_webhook(request: web.Request) -> web.Response:
    hook = _webhook(request)
    permit(request, "view")
    if hook is None:
        raise WooError(404, "woocommerce_rest_shop_webhook_invalid_id", "Invalid ID.")
    return json_response(_webhook_body(request, hook))


async def update_webhook(request: web.Request) -> web.Response:
    sim = request.app[SIM]
    changes = _webhook_changes(await read_body(request), creating=False)
    permit(request, "edit")
    hook = _webhook(request)
    if hook is None:
        raise WooError(400, "woocommerce_rest_shop_webhook_invalid_id", "ID is invalid.")
    for key, value in changes.items():
        setattr(hook, key, value)  # status "active" keeps the failure count (see webhooks.py)
    hook.modified = sim.clock.now()
    return json_response(_webhook_body(request, hook))


async def delete_webhook(request: web.Request) -> web.Response:
    sim = request.app[SIM]
    p = Params(params_of(request))
    force = bool(p.boolean("force"))
    p.check()
    permit(request, "delete")
    hook = _webhook(request)
    if hook is None:
        raise WooError(404, "woocommerce_rest_shop_webhook_invalid_id", "Invalid ID.")
    if not force:
        raise WooError(
            501, "woocommerce_rest_trash_not_supported", "Webhooks do not support trashing."
        )
    body = _webhook_body(request, hook)
    del sim.webhooks.webhooks[hook.id]
    return json_response(body)


# -- store settings the adapter may need --------------------------------------------------------


async def settings_general(request: web.Request) -> web.Response:
    permit(request, "list")
    cat = request.app[SIM].catalog
    offset_hours = cat.utc_offset / 3600
    settings = [
        ("woocommerce_currency", "Currency", cat.currency),
        ("woocommerce_price_num_decimals", "Number of decimals", "2"),
        ("woocommerce_price_decimal_sep", "Decimal separator", "."),
        ("woocommerce_price_thousand_sep", "Thousand separator", ","),
        ("woocommerce_default_country", "Country / State", "DE"),
        ("gmt_offset", "Timezone offset (hours, WordPress option)", f"{offset_hours:g}"),
    ]
    docs = [
        {
            "id": sid,
            "label": label,
            "description": "",
            "type": "text",
            "value": value,
            "group_id": "general",
        }
        for sid, label, value in settings
    ]
    return json_response(encode(docs))


async def current_currency(request: web.Request) -> web.Response:
    permit(request, "view")
    code = request.app[SIM].catalog.currency
    names = {"EUR": ("Euro", "&euro;"), "USD": ("United States (US) dollar", "&#36;")}
    name, symbol = names.get(code, (code, code))
    return json_response(encode({"code": code, "name": name, "symbol": symbol}))


async def wp_index(request: web.Request) -> web.Response:
    cat = request.app[SIM].catalog
    return json_response(
        encode(
            {
                "name": "Simulated Shop",
                "description": "A WooCommerce simulator",
                "url": cat.site_url,
                "home": cat.site_url,
                "gmt_offset": f"{cat.utc_offset / 3600:g}",
                "namespaces": ["wp/v2", "wc/v1", "wc/v2", "wc/v3", "wc/store/v1"],
                "authentication": [],
            }
        )
    )


async def no_route(request: web.Request) -> web.Response:
    raise WooError(404, "rest_no_route", "No route was found matching the URL and request method.")


def add_routes(app: web.Application) -> None:
    """Webhooks, settings and the index; then the catch-all `rest_no_route` (register last)."""
    r = app.router
    base = REST_PREFIX
    r.add_get("/wp-json/", wp_index)
    r.add_get(f"{base}/webhooks", list_webhooks)
    r.add_post(f"{base}/webhooks", create_webhook)
    r.add_get(f"{base}/webhooks/{{id:\\d+}}", get_webhook)
    for method in ("PUT", "POST", "PATCH"):  # WP_REST_Server::EDITABLE
        r.add_route(method, f"{base}/webhooks/{{id:\\d+}}", update_webhook)
    r.add_delete(f"{base}/webhooks/{{id:\\d+}}", delete_webhook)
    r.add_get(f"{base}/settings/general", settings_general)
    r.add_get(f"{base}/data/currencies/current", current_currency)
    r.add_route("*", "/wp-json/{tail:.*}", no_route)
