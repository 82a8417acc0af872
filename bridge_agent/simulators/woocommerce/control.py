"""The control API under `/__sim/`: no auth, never slowed or failed by the fault settings.

- `POST   /__sim/products`            create (body: product fields; `variations`: list of bodies
                                       with `attributes: [{id, name, option}]`), 201
- `PATCH  /__sim/products/{id}`       change fields of a product or variation; bumps
                                       `date_modified` and fires webhooks unless `?bump=false` /
                                       `?webhooks=false` (a direct SQL edit, an import)
- `DELETE /__sim/products/{id}?force=` trash (fires product.deleted) or delete for good (fires
                                       nothing)
- `POST   /__sim/products/{id}/untrash` the admin's "Restore": draft, product.restored
- `POST   /__sim/faults`              change fault settings (sim.Faults fields); GET reads them
- `GET    /__sim/truth`               `{"products": [{"product": …, "variations": […]}]}`, trash
                                       included, exactly the REST JSON
- `GET    /__sim/stats`               requests by route and status, webhook deliveries
- `POST   /__sim/clock`               `{"advance": s}`, `{"set": epoch | ISO}`, `{"freeze": bool}`;
                                       GET reads it
- `GET    /__sim/info`                site URL, API keys, timezone offset
- `POST   /__sim/keys`                `{"permissions": "read"}`: a new key pair
- `POST   /__sim/webhooks/drain`      wait until every queued delivery has been attempted
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from aiohttp import web

from bridge_agent.simulators.woocommerce.model import WooError, encode, parse_rest_date, wall
from bridge_agent.simulators.woocommerce.rest import SIM, Params, json_response, params_of


async def _json(request: web.Request) -> Any:
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except ValueError:
        raise WooError(400, "sim_invalid_json", "The body is not JSON.") from None


def _flag(request: web.Request, name: str, default: bool) -> bool:
    p = Params(params_of(request))
    value = p.boolean(name)
    p.check()
    return default if value is None else value


async def create_product(request: web.Request) -> web.Response:
    body = await _json(request)
    if not isinstance(body, dict):
        raise WooError(400, "sim_invalid_body", "Send a JSON object.")
    return json_response(encode(request.app[SIM].create_product(body)), status=201)


async def patch_product(request: web.Request) -> web.Response:
    body = await _json(request)
    if not isinstance(body, dict):
        raise WooError(400, "sim_invalid_body", "Send a JSON object.")
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


async def faults(request: web.Request) -> web.Response:
    sim = request.app[SIM]
    if request.method == "POST":
        body = await _json(request)
        if not isinstance(body, dict):
            raise WooError(400, "sim_invalid_body", "Send a JSON object.")
        try:
            sim.faults.update(body)
        except ValueError as exc:
            raise WooError(400, "sim_invalid_fault", str(exc)) from None
    return json_response(encode(sim.faults.doc()))


async def truth(request: web.Request) -> web.Response:
    return json_response(request.app[SIM].truth_bytes())


async def stats(request: web.Request) -> web.Response:
    return json_response(encode(request.app[SIM].stats()))


def _clock_doc(request: web.Request) -> dict[str, Any]:
    sim = request.app[SIM]
    now = sim.clock.now()
    return {
        "now": now,
        "now_gmt": wall(now),
        "now_local": wall(now + sim.catalog.utc_offset),
        "frozen": sim.clock.frozen,
        "utc_offset_seconds": sim.catalog.utc_offset,
    }


async def clock(request: web.Request) -> web.Response:
    sim = request.app[SIM]
    if request.method == "POST":
        body = await _json(request)
        if not isinstance(body, dict):
            raise WooError(400, "sim_invalid_body", "Send a JSON object.")
        if "freeze" in body:
            sim.clock.freeze(bool(body["freeze"]))
        if "set" in body:
            value = body["set"]
            if isinstance(value, int) and not isinstance(value, bool):
                sim.clock.set(value)
            elif isinstance(value, str) and (ts := parse_rest_date(value, 0)) is not None:
                sim.clock.set(ts)  # a zone-less value is GMT here
            else:
                raise WooError(400, "sim_invalid_clock", "set: epoch seconds or ISO 8601.")
        if "advance" in body:
            seconds = body["advance"]
            if isinstance(seconds, bool) or not isinstance(seconds, int | float):
                raise WooError(400, "sim_invalid_clock", "advance: a number of seconds.")
            sim.clock.advance(int(seconds))
    return json_response(encode(_clock_doc(request)))


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
    body = await _json(request)
    permissions = body.get("permissions", "read_write") if isinstance(body, dict) else "read_write"
    try:
        ck, cs = request.app[SIM].add_key(str(permissions))
    except ValueError as exc:
        raise WooError(400, "sim_invalid_key", str(exc)) from None
    return json_response(
        encode({"consumer_key": ck, "consumer_secret": cs, "permissions": permissions}), status=201
    )


async def drain(request: web.Request) -> web.Response:
    await request.app[SIM].webhooks.drain()
    return json_response(encode(request.app[SIM].webhooks.counts))


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_post("/__sim/products", create_product)
    r.add_patch("/__sim/products/{id:\\d+}", patch_product)
    r.add_delete("/__sim/products/{id:\\d+}", delete_product)
    r.add_post("/__sim/products/{id:\\d+}/untrash", untrash_product)
    r.add_route("*", "/__sim/faults", faults)
    r.add_get("/__sim/truth", truth)
    r.add_get("/__sim/stats", stats)
    r.add_route("*", "/__sim/clock", clock)
    r.add_get("/__sim/info", info)
    r.add_post("/__sim/keys", add_key)
    r.add_post("/__sim/webhooks/drain", drain)
