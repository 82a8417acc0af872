"""The control API under `/__sim/`: no auth, never slowed or failed by the fault settings.

Shopify's own routes are here; faults, truth, stats, clock and webhook drain are the shared
routes of `simulators/core/control.py` over this simulator (same paths, same answers; the fault
body also takes the Shopify settings of `settings.ShopifyFaults`).

- `GET    /__sim/info`                  shop URL, API version, access token, client secret,
                                         shop domain, seed, bucket
- `POST   /__sim/products`              create (GraphQL field names; `variants`: list with
                                         `selectedOptions`, `sku`, `price`...; `media`: list
                                         with `url`, `alt`), 201
- `PATCH  /__sim/products/{id}`         change fields (GraphQL names; `variants` / `media`
                                         items name their `id`); `?bump=false` leaves
                                         `updatedAt`, `?webhooks=false` fires nothing
- `DELETE /__sim/products/{id}`         delete (fires products/delete unless `?webhooks=false`)
- `POST   /__sim/inventory`             `{"inventory_item_id": N, "available": N}`: stock at
                                         the shop's location; fires inventory_levels/update
                                         only, the product's `updatedAt` does not move
- `GET    /__sim/truth`                 `{"products": [...]}`: every live product as a query of
                                         every field the adapter reads answers it
"""

from __future__ import annotations

from aiohttp import web

from bridge_agent.simulators.core import control as shared
from bridge_agent.simulators.core.control import ControlError, json_response, read_object
from bridge_agent.simulators.shopify.model import encode
from bridge_agent.simulators.shopify.sim import ShopifySimulator, SimError

SIM = web.AppKey("shopify_sim", ShopifySimulator)


def _flag(request: web.Request, name: str) -> bool:
    value = request.query.get(name, "true").lower()
    if value not in ("true", "false", "1", "0"):
        raise ControlError(400, "sim_invalid_param", f"{name} is true or false.")
    return value in ("true", "1")


def _num(request: web.Request) -> int:
    return int(request.match_info["id"])


async def info(request: web.Request) -> web.Response:
    return json_response(encode(request.app[SIM].info()))


async def create_product(request: web.Request) -> web.Response:
    body = await read_object(request)
    doc = request.app[SIM].create_product(body, webhooks=_flag(request, "webhooks"))
    return json_response(encode(doc), status=201)


async def patch_product(request: web.Request) -> web.Response:
    body = await read_object(request)
    try:
        doc = request.app[SIM].update_product(
            _num(request), body, bump=_flag(request, "bump"), webhooks=_flag(request, "webhooks")
        )
    except SimError as exc:
        raise ControlError(404, "sim_not_found", str(exc)) from None
    return json_response(encode(doc))


async def delete_product(request: web.Request) -> web.Response:
    try:
        doc = request.app[SIM].delete_product(_num(request), webhooks=_flag(request, "webhooks"))
    except SimError as exc:
        raise ControlError(404, "sim_not_found", str(exc)) from None
    return json_response(encode(doc))


async def inventory(request: web.Request) -> web.Response:
    body = await read_object(request)
    item, available = body.get("inventory_item_id"), body.get("available")
    if isinstance(item, str) and item.rsplit("/", 1)[-1].isdigit():
        item = int(item.rsplit("/", 1)[-1])
    if not isinstance(item, int) or not isinstance(available, int) or isinstance(available, bool):
        raise ControlError(
            400, "sim_invalid_body", "Send {inventory_item_id: number, available: number}."
        )
    try:
        doc = request.app[SIM].set_inventory(item, available, webhooks=_flag(request, "webhooks"))
    except SimError as exc:
        raise ControlError(404, "sim_not_found", str(exc)) from None
    return json_response(encode(doc))


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/__sim/info", info)
    r.add_post("/__sim/products", create_product)
    r.add_patch("/__sim/products/{id:\\d+}", patch_product)
    r.add_delete("/__sim/products/{id:\\d+}", delete_product)
    r.add_post("/__sim/inventory", inventory)
    shared.add_routes(app, app[SIM], encode=encode)
