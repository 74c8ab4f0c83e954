"""common/deferred.py and what the edge daemons keep out of memory at start (issue 12)."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def _run(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_agent_starts_without_dnslib_or_urllib_request() -> None:
    """The agent's modules (those the service imports lazily at start too) leave dnslib and
    urllib.request (with http.client and email) unloaded: 3 MiB of the 40 MiB budget."""
    out = _run(
        """
        import sys
        import agent.laptop.cli, agent.laptop.service, agent.laptop.activity.sampler
        import agent.laptop.site.netwatch, agent.laptop.site.network_id
        import agent.laptop.site.beacon, agent.laptop.resolver.tamper
        import agent.laptop.sniffer.supervisor, agent.report.mqtt, agent.report.session
        from common.deferred import loaded
        print(sorted(m for m in ("dnslib", "http.client", "email.parser") if m in sys.modules),
              loaded("urllib.request"))
        """
    )
    assert out == "[] False"


def test_a_deferred_module_loads_on_first_use_and_then_is_the_real_one() -> None:
    out = _run(
        """
        import sys, importlib
        from common.deferred import defer, loaded
        defer("urllib.request")
        import urllib.request
        before = loaded("urllib.request"), "http.client" in sys.modules
        from urllib.request import Request       # a from-import reads an attribute: loads
        real = sys.modules["urllib.request"]
        print(before, loaded("urllib.request"), real is urllib.request,
              importlib.import_module("urllib.request") is real,
              Request is real.Request, urllib.request.getproxies is real.getproxies)
        """
    )
    assert out == "(False, False) True True True True True"


def test_a_star_import_of_a_deferred_module_gets_its_names() -> None:
    out = _run(
        """
        from common.deferred import defer, loaded
        defer("urllib.request")
        names = {}
        exec("from urllib.request import *", names)
        print("urlopen" in names, "Request" in names, loaded("urllib.request"))
        """
    )
    assert out == "True True True"


def test_defer_leaves_an_imported_or_unknown_module_alone() -> None:
    out = _run(
        """
        import sys, json
        from common.deferred import defer, loaded
        defer("json")
        defer("no_such_package_here.mod")
        print(sys.modules["json"] is json, "no_such_package_here.mod" in sys.modules)
        """
    )
    assert out == "True False"


def test_paho_still_works_through_the_deferral() -> None:
    """The client module paho imports with urllib.request deferred builds and packs packets."""
    out = _run(
        """
        from agent.report.mqtt_client import paho
        from paho.mqtt.enums import CallbackAPIVersion
        from common.deferred import loaded
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id="d1", protocol=paho.MQTTv5)
        client.username_pw_set("d1", "secret")
        print(type(client).__name__, loaded("urllib.request"))
        """
    )
    assert out == "Client False"
