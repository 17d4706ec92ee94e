# The two commands of the README. Both create .venv on first use and are idempotent.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# `make dashboard PORT=8502 ADDRESS=0.0.0.0` overrides .streamlit/config.toml; serving beyond this
# machine on purpose is described in the README (set VIZCORE_DATA_ROOTS and the budgets first).
PORT ?= 8501
ADDRESS ?= 127.0.0.1

.PHONY: dashboard test bench clean

$(STAMP): requirements.txt pyproject.toml
	@echo "==> Setting up $(VENV) (first run, or requirements changed): a few minutes, once."
	@test -x $(PY) || { echo "==> Creating the virtual environment $(VENV) with $(PYTHON)"; $(PYTHON) -m venv $(VENV); }
	@echo "==> Upgrading pip"
	@$(PY) -m pip install -q --upgrade pip
	@echo "==> Installing requirements.txt (PyTorch, torchvision, timm, Streamlit, ...; the long step)"
	@$(PY) -m pip install --progress-bar on -r requirements.txt
	@echo "==> Installing vizcore itself (editable)"
	@$(PY) -m pip install -q --no-deps -e .
	@touch $(STAMP)
	@echo "==> Environment ready."

dashboard: $(STAMP)
	@case "$(ADDRESS)" in \
	  127.0.0.1|localhost|::1) echo "==> vizcore dashboard: open http://$(ADDRESS):$(PORT) in a browser (Ctrl+C stops it)";; \
	  0.0.0.0|::) echo "==> vizcore dashboard on every network interface: open http://localhost:$(PORT) here," \
	                "or http://$$(hostname):$(PORT) from another machine (Ctrl+C stops it)";; \
	  *) echo "==> vizcore dashboard: open http://$(ADDRESS):$(PORT) in a browser (Ctrl+C stops it)";; \
	esac
	@case "$(ADDRESS)" in 127.0.0.1|localhost|::1) ;; *) \
	  echo "==> Reachable from other machines: inputs read only under VIZCORE_DATA_ROOTS" \
	       "($${VIZCORE_DATA_ROOTS:-default: home, working directory, cache}); see the README.";; esac
	$(VENV)/bin/streamlit run dashboard/app.py --server.port $(PORT) --server.address $(ADDRESS)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	for f in bench/*.py; do $(PY) $$f || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache
