# Everything a newcomer or CI runs. Only python3.11, git and make are assumed: the first target
# that needs them installs uv (pinned) into .tools/ and the locked dependencies into .venv/.
UV_VERSION := 0.13.9
UV := .tools/bin/uv
PY := python3

.PHONY: demo test lint types imports pytest bench clean system-deps plugin-zip

$(UV):
	$(PY) -m venv .tools
	.tools/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

.venv/.synced: $(UV) pyproject.toml uv.lock
	$(UV) sync --frozen --quiet
	touch $@

demo: .venv/.synced
	$(UV) run --frozen bridge-agent demo

test: lint types imports system-deps pytest

# Debian packages some tests need: systemd-analyze checks the shipped unit
# (tests/test_systemd_unit.py); WordPress, PHP and MariaDB run the companion plugin's tests in a
# real WordPress (tests/test_wordpress_plugin.py). Installing needs root, so elsewhere those tests
# say why they skip (under CI=true they fail instead: CI must never skip them silently).
# policy-rc.d keeps the packages' maintainer scripts from starting services: the tests start
# their own MariaDB in a temporary directory.
SYSTEM_PACKAGES := systemd procps wordpress php-cli php-mysql mariadb-server

system-deps:
	@if command -v systemd-analyze >/dev/null 2>&1 && command -v php >/dev/null 2>&1 \
	    && php -m | grep -qx mysqli && command -v mariadb-install-db >/dev/null 2>&1 \
	    && [ -f /usr/share/wordpress/wp-settings.php ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  own=0; if [ ! -e /usr/sbin/policy-rc.d ]; then own=1; \
	    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; fi; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends $(SYSTEM_PACKAGES) >/dev/null; \
	  status=$$?; [ $$own = 0 ] || rm -f /usr/sbin/policy-rc.d; exit $$status; \
	else echo "note: cannot install $(SYSTEM_PACKAGES) here (needs root and apt-get)"; fi

lint: .venv/.synced
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .

types: .venv/.synced
	$(UV) run --frozen mypy

imports: .venv/.synced
	$(UV) run --frozen lint-imports

pytest: .venv/.synced
	$(UV) run --frozen pytest

# The WordPress companion plugin as the zip a merchant uploads (dist/bridge-agent-wordpress-*.zip).
plugin-zip:
	$(PY) plugins/package.py --out dist

bench: .venv/.synced
	$(UV) run --frozen python bench/ship.py

clean:
	rm -rf .venv .tools .mypy_cache .ruff_cache .pytest_cache
