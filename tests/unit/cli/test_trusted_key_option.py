"""``--trusted-key ID=VALUE`` means the same in every command: VALUE is a key file, its PEM
text or the raw base64 key, and a malformed option is a ConfigError naming it."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.cli.options import trusted_keys_from_args
from agent.core.errors import ConfigError
from agent.tools.packaging.keys import keys_generate
from agent.wire.keys import public_key_b64


def test_a_file_pem_and_base64_name_the_same_key(tmp_path: Path) -> None:
    files = keys_generate(tmp_path, "ctl")
    keys = trusted_keys_from_args([f"a={files.public}", f"b={files.public.read_text()}",
                                   f"c={files.public_b64}"])
    assert sorted(keys) == ["a", "b", "c"]
    assert {public_key_b64(key) for key in keys.values()} == {files.public_b64}


@pytest.mark.parametrize("item", ["no-equals-sign", "=abc"])
def test_a_malformed_option_names_itself(item: str) -> None:
    with pytest.raises(ConfigError, match=f"--trusted-key wants ID=VALUE.*{item!r}"):
        trusted_keys_from_args([item])

