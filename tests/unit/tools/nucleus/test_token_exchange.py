"""The emulated nucleus's token exchange service, fetched through botocore's own container
credential provider: the token checked, the answer's shape, the variables given only to the
components that depend on the service, and the dependency provided by the nucleus itself."""

from __future__ import annotations

import datetime
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from botocore.credentials import ContainerProvider
from botocore.exceptions import CredentialRetrievalError
from botocore.utils import ContainerMetadataFetcher

from agent.tools.greengrass.recipe import Recipe, host_platform
from agent.tools.nucleus import ComponentStore, EmulatedNucleus
from agent.tools.nucleus.token_exchange import (
    AUTH_TOKEN_ENV,
    CREDENTIALS_PATH,
    FULL_URI_ENV,
    TOKEN_EXCHANGE_SERVICE,
    TesCredentials,
)
from agent.tools.s3.local_server import ACCESS_KEY, SECRET_KEY

APP, OTHER = "com.example.Uploader", "com.example.Other"
OS, ARCH = host_platform()


def recipe(name: str, *, tes: bool, startup: str | None = None) -> Recipe:
    lifecycle: dict[str, Any] = {"startup": startup} if startup else {}
    dependencies = {TOKEN_EXCHANGE_SERVICE: {"VersionRequirement": ">=2.0.0 <3.0.0",
                                             "DependencyType": "HARD"}} if tes else {}
    return Recipe.parse({
        "RecipeFormatVersion": "2020-01-25", "ComponentName": name,
        "ComponentVersion": "1.0.0", "ComponentDependencies": dependencies,
        "Manifests": [{"Platform": {"os": OS, "architecture": ARCH},
                       "Lifecycle": lifecycle}]})


@pytest.fixture
def nucleus() -> Iterator[EmulatedNucleus]:
    with EmulatedNucleus(recipes=[recipe(APP, tes=True), recipe(OTHER, tes=False)],
                         thing_name="tes-1") as running:
        yield running


def provider(env: dict[str, str]) -> ContainerProvider:
    """botocore's container provider reading ``env``, without its 1 s sleeps between tries."""
    return ContainerProvider(environ=env, fetcher=ContainerMetadataFetcher(sleep=lambda _s: None))


def status_of(url: str, *, method: str = "GET", token: str | None = None) -> int:
    headers = {"Authorization": token} if token is not None else {}
    request = urllib.request.Request(url, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as err:
        return err.code


def test_a_dependent_gets_the_credentials_through_botocore(nucleus: EmulatedNucleus) -> None:
    env = nucleus.component_env(APP, base={})
    assert env[FULL_URI_ENV] == \
        f"http://localhost:{nucleus.token_exchange.port}{CREDENTIALS_PATH}"
    assert env[AUTH_TOKEN_ENV] == nucleus.svcuid_for(APP)  # as a nucleus: the SVCUID
    started = time.time()
    credentials = provider(env).load()
    assert credentials is not None and credentials.method == "container-role"
    frozen = credentials.get_frozen_credentials()
    assert (frozen.access_key, frozen.secret_key) == (ACCESS_KEY, SECRET_KEY)
    assert frozen.token == "emulated-tes-session-token"
    expiry = credentials._expiry_time  # botocore parsed the Expiration
    left = expiry.timestamp() - started
    assert 3500 < left <= 3601, expiry
    assert expiry.tzinfo is not None and expiry.utcoffset() == datetime.timedelta(0)
    assert nucleus.token_exchange.served == {APP: 1}


def test_the_default_chain_finds_it_with_no_other_credentials(
        nucleus: EmulatedNucleus, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                 "AWS_PROFILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for name, value in nucleus.token_exchange.env(APP).items():
        monkeypatch.setenv(name, value)
    credentials = botocore.session.Session().get_credentials()
    assert credentials is not None and credentials.method == "container-role"
    assert credentials.get_frozen_credentials().access_key == ACCESS_KEY


def test_only_dependents_get_the_variables_and_the_token_is_checked(
        nucleus: EmulatedNucleus) -> None:
    leaked = {FULL_URI_ENV: "http://localhost:1/elsewhere", AUTH_TOKEN_ENV: "inherited"}
    other = nucleus.component_env(OTHER, base=leaked)
    assert FULL_URI_ENV not in other and AUTH_TOKEN_ENV not in other
    url = nucleus.token_exchange.url
    refusals = {
        "another component's SVCUID": {FULL_URI_ENV: url,
                                       AUTH_TOKEN_ENV: nucleus.svcuid_for(OTHER)},
        "a wrong token": {FULL_URI_ENV: url, AUTH_TOKEN_ENV: "0" * 32},
        "no token": {FULL_URI_ENV: url},
    }
    for why, env in refusals.items():
        with pytest.raises(CredentialRetrievalError, match="non 200 response 403"):
            provider(env).load()
        print(f"refused with 403: {why}")
    assert nucleus.token_exchange.refused == {403: 9}  # botocore tries three times
    assert nucleus.token_exchange.served == {}
    token = nucleus.svcuid_for(APP)
    assert status_of(url, method="POST", token=token) == 405
    assert status_of(url.replace("credentialprovider", "other"), token=token) == 400
    assert status_of(url, token=token) == 200


def test_configured_credentials_and_the_port_kept_across_a_restart() -> None:
    configured = TesCredentials(access_key_id="AKIDEXAMPLE", secret_access_key="s3cr3t",
                                session_token="session-1", lifetime_s=1200)
    nucleus = EmulatedNucleus(recipes=[recipe(APP, tes=True)], thing_name="tes-2",
                              tes_credentials=configured)
    env = nucleus.component_env(APP, base={})  # known before the nucleus starts
    try:
        nucleus.start()
        frozen = provider(env).load().get_frozen_credentials()
        assert (frozen.access_key, frozen.secret_key, frozen.token) == \
            ("AKIDEXAMPLE", "s3cr3t", "session-1")
        nucleus.restart()
        assert nucleus.component_env(APP, base={}) == env
        assert provider(env).load().get_frozen_credentials().token == "session-1"
    finally:
        nucleus.close()
    with pytest.raises(CredentialRetrievalError):
        provider(env).load()  # nothing listens once the nucleus is gone


def test_no_dependent_no_listener() -> None:
    with EmulatedNucleus(recipes=[recipe(OTHER, tes=False)], thing_name="tes-3") as nucleus:
        assert nucleus.token_exchange.port == 0 and not nucleus.token_exchange.needed
        assert FULL_URI_ENV not in nucleus.component_env(base={})


def test_the_dependency_is_provided_by_the_nucleus_and_deployments_get_it(
        tmp_path: Path) -> None:
    writes_env = (f'echo "${FULL_URI_ENV} ${AUTH_TOKEN_ENV}" > {tmp_path}/tes-env.txt')
    app = recipe(APP, tes=True, startup=writes_env)
    plan = ComponentStore(None, [app]).resolve({APP: None})
    assert dict(plan.provided) == {TOKEN_EXCHANGE_SERVICE: ">=2.0.0 <3.0.0"}
    assert plan.names == [APP]
    with EmulatedNucleus(recipes=[app], thing_name="tes-4", root_dir=tmp_path / "gg") as nucleus:
        nucleus.deploy(timeout_s=30)
        uri, token = (tmp_path / "tes-env.txt").read_text().split()
        assert (uri, token) == (nucleus.token_exchange.url, nucleus.svcuid_for(APP))
        frozen = provider({FULL_URI_ENV: uri, AUTH_TOKEN_ENV: token}).load()
        assert frozen.get_frozen_credentials().access_key == ACCESS_KEY
