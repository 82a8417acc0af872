"""The control API under `/__sim/`: no auth, never slowed or failed by the fault settings.

WooCommerce's own routes are here; faults, truth, stats, clock and webhook drain are the shared
routes of `simulators/core/control.py` over this simulator (same paths, same answers).

- `POST   /__sim/products`            create (body: product fields; `variations`: list of bodies
                                       with `attributes: [{id, name, option}]`), 201
- `PATCH  /__sim/products/{id}`       change fields of a product or variation; bumps
                                       `date_modified` and fires webhooks unless `?bump=false` /
                                       `?webhooks=false` (a direct SQL edit, an import)
- `DELETE /__sim/products/{id}?force=` trash (fires product.deleted) or delete for good (fires
                                       nothing)
- `POST   /__sim/products/{id}/untrash` the admin's "Restore": draft, product.restored
- `POST   /__sim/faults`              change fault settings (core.faults.Faults fields); GET reads
- `GET    /__sim/truth`               `{"products": [{"product": …, "variations": […]}]}`, trash
                                       included, exactly the REST JSON
- `GET    /__sim/stats`               requests by route and status, webhook deliveries
- `GET    /__sim/writes`              fields written through the REST API, counted per product
- `POST   /__sim/clock`               `{"advance": s}`, `{"set": epoch | ISO}`, `{"freeze": bool}`;
                                       GET reads it
- `GET    /__sim/info`                site URL, API keys, timezone offset
- `POST   /__sim/keys`                `{"permissions": "read"}`: a new key pair
- `POST   /__sim/webhooks/drain`      wait until every queued delivery has been attempted
"""

from __future__ import annotations

from datetime import datetime

from aiohttp import web

from bridge_agent.simulators.core import control as shared
from bridge_agent.simulators.core.control import json_response, read_json, read_object
from bridge_agent.simulators.woocommerce.model import WooError, encode
from bridge_agent.simulators.woocommerce.rest import SIM, Params, params_of


def _flag(request: web.Request, name: str, default: bool) -> bool:
    p = Params(params_of(request))
    value = p.boolean(name)
    p.check()
    return default if value is None else value


async def create_product(request: web.Request) -> web.Response:
    body = await read_object(request)
    return json_response(encode(request.app[SIM].create_product(body)), status=201)


async def patch_product(request: web.Request) -> web.Response:
    body = await read_object(request)
    doc = request.app[SIM].update_product(
        int(request.match_info["id"]),
        body,
        bump=_flag(request, "bump", True),
        webhooks=_flag(request, "webhooks", True),
    )
    return json_response(encode(doc))


async def delete_product(request: web.Request) -> web.Response:
    force = _flag(request, "force", False)
    doc = request.app[SIM].delete_product(int(request.match_info["id"]), force=force)
    return json_response(encode(doc))


async def untrash_product(request: web.Request) -> web.Response:
    return json_response(encode(request.app[SIM].untrash_product(int(request.match_info["id"]))))


async def rest_writes(request: web.Request) -> web.Response:
    sim = request.app[SIM]
    return json_response(encode({"products": sim.writes(), "at": sim.written_at()}))


async def info(request: web.Request) -> web.Response:
    sim = request.app[SIM]
    return json_response(
        encode(
            {
                "site_url": sim.site_url,
                "api": f"{sim.site_url}/wp-json/wc/v3",
                "consumer_key": sim.consumer_key,
                "consumer_secret": sim.consumer_secret,
                "keys": [
                    {
                        "consumer_key": k.consumer_key,
                        "consumer_secret": k.consumer_secret,
                        "permissions": k.permissions,
                    }
                    for k in sim.keys.values()
                ],
                "utc_offset_seconds": sim.catalog.utc_offset,
                "currency": sim.catalog.currency,
                "seed": sim.seed,
                "started": datetime.now().astimezone().isoformat(timespec="seconds"),
            }
        )
    )


async def add_key(request: web.Request) -> web.Response:
    body = await read_json(request)
    permissions = body.get("permissions", "read_write") if isinstance(body, dict) else "read_write"
    try:
        ck, cs = request.app[SIM].add_key(str(permissions))
    except ValueError as exc:
        raise WooError(400, "sim_invalid_key", str(exc)) from None
    return json_response(
        encode({"consumer_key": ck, "consumer_secret": cs, "permissions": permissions}), status=201
    )


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_post("/__sim/products", create_product)
    r.add_patch("/__sim/products/{id:\\d+}", patch_product)
    r.add_delete("/__sim/products/{id:\\d+}", delete_product)
    r.add_post("/__sim/products/{id:\\d+}/untrash", untrash_product)
    r.add_get("/__sim/writes", rest_writes)
    r.add_get("/__sim/info", info)
    r.add_post("/__sim/keys", add_key)
    shared.add_routes(app, app[SIM], encode=encode)
