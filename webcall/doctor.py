"""``python -m webcall doctor``: the configuration checked against the DialNexa account, one line per check.

The first hour with a real account is where integrations fail silently: a key for another workspace, a base URL
without ``/v1``, an unpublished agent, a placeholder nobody fills, a webhook that points elsewhere or that the agent
does not use. Each check prints ✔ (fine), ! (a warning: it may work, here is how to be sure) or ✖ (it will not work)
with the fix in one sentence. Nothing billable happens unless ``place_test_call`` is asked for: the web-call path is
probed with an empty body, which DialNexa refuses before creating anything.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from urllib.parse import urlsplit

from .catalog import FAILED as FAILED  # the outcomes of the doctor's checks, as of the agent checks
from .catalog import OK as OK
from .catalog import WARNING as WARNING
from .catalog import Finding, lookup_failure, placeholders, unpublished, webhook_binding
from .config import WebCallConfig
from .dialnexa import AgentInfo, DialNexaClient, WebhookRecord
from .errors import (
    ConfigError,
    DialNexaAPIError,
    DialNexaAuthError,
    DialNexaBadRequest,
    DialNexaError,
    DialNexaNotFound,
    DialNexaRateLimited,
    DialNexaServerError,
    DialNexaTransportError,
    StoreUnavailable,
)
from .runtime import make_client, make_store
from .startup import key_refused, not_dialnexa
from .subscription import DOCUMENTED_SUBSCRIPTION_EVENTS, SHOWN_SUBSCRIPTION_EVENTS
from .turn_probe import (
    REASON_CREDENTIALS,
    REASON_DNS,
    REASON_REFUSED,
    REASON_REFUSED_ALLOCATION,
    REASON_TIMEOUT,
    REASON_TLS,
    REASON_TLS_NAME,
    REASON_TLS_UNTRUSTED,
    REASON_UNREACHABLE,
    REASON_URL,
    TurnProbeError,
    TurnUrl,
    allocate,
    parse_turn_url,
)

MARKS = {OK: "✔", WARNING: "!", FAILED: "✖"}

TURN_TIMEOUT = 5.0
"""Seconds for each TURN URL's allocation (they run at once); a browser waits about as long before it gives up."""


@dataclass(frozen=True)
class Check:
    """One line of the report: what was checked, how it went, what was found, and the fix when it is not fine."""

    name: str
    outcome: str
    detail: str
    fix: str = ""

    def line(self) -> str:
        text = f"{MARKS[self.outcome]} {self.name}: {self.detail}"
        return f"{text}\n    fix: {self.fix}" if self.fix else text

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def failed(checks: Sequence[Check]) -> bool:
    return any(check.outcome == FAILED for check in checks)


class Doctor:
    """Runs the checks in order; a check whose premise failed (no key, no agent) is skipped, not guessed."""

    def __init__(self, config: WebCallConfig, client: DialNexaClient, *, prefix: str = "/webcall") -> None:
        self.config = config
        self.client = client
        self.prefix = "/" + prefix.strip("/") if prefix.strip("/") else ""
        self.checks: list[Check] = []
        self._agents: dict[str, AgentInfo] = {}

    def add(self, name: str, outcome: str, detail: str, fix: str = "") -> None:
        self.checks.append(Check(name, outcome, detail, fix))

    def report(self, name: str, finding: Finding) -> None:
        self.add(name, finding.outcome, finding.detail, finding.fix)

    async def run(self, *, place_test_call: bool = False) -> list[Check]:
        hooks = await self.check_account()
        if hooks is None:
            return self.checks
        await self.check_agents()
        self.check_public_url()
        self.check_subscription(hooks)
        await self.check_store()
        await self.check_turn()
        self.check_tickets()
        await self.check_web_call_path(place_test_call=place_test_call)
        return self.checks

    # -- the account -------------------------------------------------------------------------------------------
    async def check_account(self) -> list[WebhookRecord] | None:
        """The base URL (DialNexa answers there) and the key (DialNexa accepts it), each on its own line, from one
        request: the account's webhooks, which the subscription check needs too."""
        base = self.client.base_url
        try:
            hooks = await self.client.list_webhooks()
        except DialNexaAuthError as err:
            self.add("base URL", OK, f"{base} (versioned /v1 API)")
            self.add("API key", FAILED, *key_refused(err))
            return None
        except DialNexaTransportError as err:
            self.add(
                "base URL",
                FAILED,
                f"{base} cannot be reached: {err.message}",
                "check DIALNEXA_BASE_URL, and that this machine reaches it (DNS, proxy, firewall)",
            )
            return None
        except (DialNexaServerError, DialNexaRateLimited) as err:
            self.add(
                "base URL",
                FAILED,
                f"DialNexa at {base} failed ({err.status_code}: {err.message})",
                "try again in a few minutes; if it persists, ask DialNexa's support",
            )
            return None
        except DialNexaAPIError as err:
            self.add("base URL", FAILED, *not_dialnexa(err, base))
            return None
        except DialNexaError as err:
            self.add(
                "base URL",
                FAILED,
                f"{base} does not answer as DialNexa does: {err}",
                "set DIALNEXA_BASE_URL to DialNexa's API, https://api.dialnexa.com/v1",
            )
            return None
        self.add("base URL", OK, f"{base} (versioned /v1 API)")
        self.add("API key", OK, "accepted")
        return hooks

    async def check_agents(self) -> None:
        for alias, agent in self.config.agents.items():
            name = f"agent {alias!r}"
            try:
                info = await self.client.get_agent(agent.id)
            except DialNexaError as err:
                self.report(name, lookup_failure(agent, err))
                continue
            if info.versions and info.version(agent.version) is None:
                self.report(name, unpublished(agent, info))
                continue
            self._agents[alias] = info
            label = f"{agent.id}, {'version ' + str(agent.version) if agent.version else 'latest version'}"
            label += f" ({info.name})" if info.name else ""
            sources = {}
            for variable in sorted(info.placeholders(agent.version)):
                if variable in agent.defaults:
                    sources[variable] = "your default"
                elif variable in agent.visitor_variables:
                    sources[variable] = "the visitor"
                elif variable in info.default_variables(agent.version):
                    sources[variable] = "the agent's default"
                else:
                    sources[variable] = ""
            unfilled = {variable for variable, source in sources.items() if not source}
            filled = ", ".join(f"{{{{{v}}}}} from {source}" for v, source in sources.items() if source)
            if unfilled:
                self.add(
                    name,
                    WARNING,
                    f"{label}; {placeholders(unfilled)} has no default and no visitor value",
                    "make sure your variables hook always sets it, or give Agent(defaults={...}), or a default in "
                    "the agent's version, so the agent never says the placeholder aloud",
                )
            else:
                self.add(name, OK, f"{label}, published; placeholders: {filled or 'none'}")

    # -- webhooks ----------------------------------------------------------------------------------------------
    def webhook_url(self) -> str | None:
        if not self.config.public_url:
            return None
        return self.config.public_url.rstrip("/") + self.prefix + "/webhooks"

    def check_public_url(self) -> None:
        url = self.config.public_url
        if not url:
            self.add(
                "public URL",
                FAILED,
                "not set, so DialNexa cannot reach the plugin's /webhooks",
                "set WEBCALL_PUBLIC_URL to the site's public origin, e.g. https://shop.example.com",
            )
            return
        host = urlsplit(url).hostname or ""
        if urlsplit(url).scheme == "https":
            self.add("public URL", OK, url)
        elif _is_loopback(host):
            self.add("public URL", OK, f"{url} (plain http on loopback: fine for development)")
        else:
            self.add("public URL", WARNING, f"{url} is plain http", "serve the site over https; DialNexa posts there")

    def check_subscription(self, hooks: list[WebhookRecord]) -> None:
        url = self.webhook_url()
        if url is None:
            return
        if not self.config.webhook_secrets:
            self.add(
                "webhook",
                FAILED,
                "no webhook secret is set",
                "set WEBCALL_WEBHOOK_SECRETS to a long random secret, then run python -m webcall register-webhook",
            )
            return
        mine = [hook for hook in hooks if hook.url == url]
        if not mine:
            self.add(
                "webhook",
                FAILED,
                f"no DialNexa webhook points at {url}",
                "run python -m webcall register-webhook (the plugin also registers it at startup)",
            )
            return
        hook = mine[0]
        problems = []
        if not hook.is_active:
            problems.append("it is inactive")
        if len(mine) > 1:
            problems.append(f"{len(mine) - 1} duplicate(s) point there too")
        if problems:
            self.add(
                "webhook",
                FAILED,
                f"{hook.id} -> {url}: " + "; ".join(problems),
                "run python -m webcall register-webhook: it activates, corrects and deduplicates it",
            )
        else:
            self.add("webhook", OK, f"{hook.id} -> {url}, active")
        self.check_events(hook)
        for alias, info in self._agents.items():
            self.check_binding(alias, info, hook.id)

    def check_events(self, hook: WebhookRecord) -> None:
        """The subscription's names against ``webhook_events``: a name DialNexa refused is left out when the plugin
        registers, so a name asked for and missing is one DialNexa refused (or one added since)."""
        undocumented = [name for name in hook.events if name not in DOCUMENTED_SUBSCRIPTION_EVENTS]
        missing = [name for name in self.config.webhook_events if name not in hook.events]
        shown = " and ".join(SHOWN_SUBSCRIPTION_EVENTS)
        if undocumented:
            self.add(
                "webhook events",
                FAILED,
                f"{hook.id} subscribes to names DialNexa does not document ({', '.join(undocumented)})",
                f"run python -m webcall register-webhook: it subscribes to WEBCALL_WEBHOOK_EVENTS ({shown} by default)",
            )
        elif missing:
            names = ", ".join(missing)
            verb = "is" if len(missing) == 1 else "are"
            detail = f"{names} (WEBCALL_WEBHOOK_EVENTS) {verb} not in the subscription"
            if all(name not in DOCUMENTED_SUBSCRIPTION_EVENTS for name in missing):
                detail += ": DialNexa refuses names it does not document"
                fix = f"remove {names} from WEBCALL_WEBHOOK_EVENTS; DialNexa documents {shown}"
            else:
                fix = (
                    "run python -m webcall register-webhook; a name DialNexa refuses is left out again and named: "
                    "remove it from WEBCALL_WEBHOOK_EVENTS"
                )
            self.add("webhook events", FAILED, f"{detail}; it has {', '.join(hook.events) or 'none'}", fix)
        else:
            self.add("webhook events", OK, ", ".join(hook.events))

    def check_binding(self, alias: str, info: AgentInfo, hook_id: str) -> None:
        self.report(f"agent {alias!r} webhook", webhook_binding(info, hook_id, self.config.agents[alias].version))

    # -- this deployment ---------------------------------------------------------------------------------------
    async def check_store(self) -> None:
        if self.config.store == "memory":
            self.add("store", OK, "memory (one process; use Redis for several workers)")
            return
        try:
            store = make_store(self.config.store)
        except ConfigError as err:
            self.add("store", FAILED, str(err), "install the redis extra: pip install 'dialnexa-webcall[redis]'")
            return
        try:
            await store.ping()
        except StoreUnavailable as err:
            self.add("store", FAILED, f"Redis does not answer: {err}", "start Redis or correct WEBCALL_STORE")
        else:
            self.add("store", OK, "Redis answers; the session secret is shared by every worker")
        finally:
            await store.close()

    async def check_turn(self, *, within: float = TURN_TIMEOUT) -> None:
        """For each TURN URL the visitors are given (``turn_urls`` with credentials minted from ``turn_secret``, and
        TURN entries of ``ice_servers``), allocate a relay as a browser would, then release it: one line per URL.
        TLS (``turns:``) is checked against the system's CAs, or ``SSL_CERT_FILE``'s."""
        jobs: list[tuple[str, str, str, str]] = []
        turn = self.config.turn
        if turn is not None:
            server = turn.server()
            jobs += [(url, server["username"], server["credential"], "minted") for url in turn.urls]
        for entry in self.config.ice_servers:
            urls = entry.get("urls")
            for url in [urls] if isinstance(urls, str) else list(urls or ()):
                if str(url).split(":", 1)[0].lower() in ("turn", "turns"):
                    jobs.append((str(url), str(entry.get("username", "")), str(entry.get("credential", "")), "static"))
        results = await asyncio.gather(*(self._turn(*job, within=within) for job in jobs))
        for (url, *_), (outcome, detail, fix) in zip(jobs, results, strict=True):
            self.add(f"TURN {url}", outcome, detail, fix)

    async def _turn(
        self, url: str, username: str, password: str, source: str, *, within: float
    ) -> tuple[str, str, str]:
        try:
            relay = await allocate(url, username, password, within=within)
        except TurnProbeError as err:
            try:
                parsed = parse_turn_url(url)
            except TurnProbeError:
                return FAILED, err.message, "correct the URL in WEBCALL_TURN_URLS / WEBCALL_ICE_SERVERS"
            return FAILED, err.message, turn_fix(parsed, err, minted=source == "minted")
        milliseconds = round(relay.seconds * 1000)
        return OK, f"relay {relay.relayed_address} allocated over {relay.url.carried_over} in {milliseconds} ms", ""

    def check_tickets(self) -> None:
        """Who decides which visitor may call: call tickets signed by the site's backend, or the origin alone."""
        config = self.config
        secrets = len(config.ticket_secrets)
        if config.require_ticket:
            rotation = f"{secrets} secrets (the first signs, all verify)" if secrets > 1 else "one secret"
            self.add(
                "call tickets",
                OK,
                f"required on every start and call-back; {rotation}, audience {config.ticket_audience!r}",
            )
        elif secrets:
            self.add(
                "call tickets",
                WARNING,
                "accepted but not required: a page without a ticket can still start calls",
                "set WEBCALL_REQUIRE_TICKET=true once every page sends one",
            )
        else:
            self.add(
                "call tickets",
                OK,
                "not used: any page of an allowed origin may start calls (within the rate limits)",
            )

    async def check_web_call_path(self, *, place_test_call: bool) -> None:
        path = self.config.web_call_path
        try:
            await self.client.probe_web_call_path()
        except DialNexaBadRequest:
            pass  # refused for the empty body: the path exists and checks what it is given
        except DialNexaNotFound:
            self.add(
                "web calls",
                FAILED,
                f"POST {path} does not exist at {self.client.base_url}",
                "set WEBCALL_WEB_CALL_PATH to the path DialNexa gave you for web calls",
            )
            return
        except DialNexaError as err:
            self.add("web calls", FAILED, f"POST {path}: {err}", "check WEBCALL_WEB_CALL_PATH and the account")
            return
        if not place_test_call:
            self.add("web calls", OK, f"POST {path} answers (no call placed; --place-test-call makes a real one)")
            return
        if not self._agents:
            self.add(
                "web calls",
                FAILED,
                f"POST {path} answers, but no test call was placed: no agent passed its check",
                "fix the agents above, then run the doctor again with --place-test-call",
            )
            return
        alias = next(iter(self._agents))  # the first agent that passed its check
        agent = self.config.agents[alias]
        try:
            session = await self.client.create_web_call(
                agent_id=agent.id, agent_version_number=agent.version, metadata=dict(agent.defaults)
            )
            await self.client.end_call(session.id, reason="user_disconnected")
        except DialNexaError as err:
            self.add("web calls", FAILED, f"a test call to {alias!r} failed: {err}", "check the agent and the plan")
            return
        self.add("web calls", OK, f"test call {session.id} to {alias!r} created and ended")


def turn_fix(url: TurnUrl, err: TurnProbeError, *, minted: bool) -> str:
    """The fix, in one sentence, for a TURN allocation that failed this way (``minted``: with credentials minted
    from ``turn_secret``, else static ones from ``ice_servers``)."""
    where = f"{url.host}:{url.port}"
    protocol = "udp" if url.transport == "udp" else "tcp"
    if err.reason == REASON_CREDENTIALS and minted:
        return (
            "the secret differs from coturn's static-auth-secret: set WEBCALL_TURN_SECRET to the same value "
            "(and keep both clocks right: the credentials carry their expiry)"
        )
    if err.reason == REASON_CREDENTIALS:
        return "correct this server's username and credential in WEBCALL_ICE_SERVERS"
    if err.reason == REASON_REFUSED:
        return (
            f"port {url.port}/{protocol} is closed on {url.host}: start coturn there, or correct the port "
            f"(coturn's {'tls-listening-port' if url.secure else 'listening-port'})"
        )
    if err.reason == REASON_TIMEOUT:
        return (
            f"nothing answered from {where} over {url.carried_over}: open port {url.port}/{protocol} in the "
            "firewall in front of coturn, and check that coturn listens on that address"
        )
    if err.reason == REASON_DNS:
        return f"correct the host name in the URL, or give {url.host} a DNS record"
    if err.reason == REASON_UNREACHABLE:
        return f"check the host in the URL and that this machine reaches {url.host} (route, firewall)"
    if err.reason == REASON_TLS_NAME:
        return (
            f"give coturn (cert=) a certificate that names {url.host}, or put the name the certificate has in the URL: "
            "browsers check it"
        )
    if err.reason == REASON_TLS_UNTRUSTED:
        return (
            "give coturn (cert=) a certificate from a public CA with its full chain: browsers refuse others "
            "(for a private CA, run the doctor with SSL_CERT_FILE naming it)"
        )
    if err.reason == REASON_TLS:
        return f"check coturn's cert= and pkey=, and that port {url.port} is its tls-listening-port"
    if err.reason == REASON_REFUSED_ALLOCATION:
        return "read coturn's log: it refused the allocation (quota, capacity or a denied address)"
    if err.reason == REASON_URL:
        return "correct the URL in WEBCALL_TURN_URLS / WEBCALL_ICE_SERVERS"
    return f"check that {where} is a TURN server ({'turns' if url.secure else 'turn'}: speaks TURN there)"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def diagnose(config: WebCallConfig, *, prefix: str = "/webcall", place_test_call: bool = False) -> list[Check]:
    """Every check for ``config`` against its DialNexa account (``config.api_key`` must be set)."""
    if config.api_key is None:
        return [
            Check(
                "API key",
                FAILED,
                "DIALNEXA_API_KEY is not set (without it the plugin runs its local emulator)",
                "set DIALNEXA_API_KEY to a key from DialNexa's dashboard, as keyID:secret",
            )
        ]
    async with make_client(config, api_key=config.api_key, base_url=config.base_url) as client:
        return await Doctor(config, client, prefix=prefix).run(place_test_call=place_test_call)
