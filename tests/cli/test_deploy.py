"""``flask-stack deploy`` delegates to ``flask_stack.deploy``: manifests written where asked, errors in one line."""

from __future__ import annotations

from .conftest import REPO, one_line_error


def test_generate_only_writes_the_manifests_into_deploy(flask_stack, tmp_path):
    assert flask_stack("init", "shop", cwd=tmp_path).returncode == 0
    result = flask_stack("deploy", "--generate-only", cwd=tmp_path / "shop")
    assert result.returncode == 0, result.stderr
    written = sorted(p.name for p in (tmp_path / "shop" / "deploy").iterdir())
    assert written == ["deployment.yaml", "hpa.yaml", "pdb.yaml", "service.yaml"]
    deployment = (tmp_path / "shop" / "deploy" / "deployment.yaml").read_text()
    assert "image: shop:latest" in deployment
    assert f"flask-stack: wrote {tmp_path / 'shop' / 'deploy' / 'deployment.yaml'}" in result.stderr
    assert result.stderr.splitlines()[-1] == (
        "flask-stack: image shop:latest assumed (no `flask-stack build` of this project recorded): build it and push "
        "it to a registry the cluster pulls from (or pass --image)")


def test_deploy_takes_the_tag_of_the_last_build(flask_stack, cli_env, tmp_path, monkeypatch):
    from flask_stack.container_image import record_last_build

    assert flask_stack("init", "shop", cwd=tmp_path).returncode == 0
    monkeypatch.setenv("STACK_CACHE_DIR", cli_env["STACK_CACHE_DIR"])
    record_last_build(tmp_path / "shop", "localhost/nc-ctr:latest")  # what `flask-stack build -t` records
    result = flask_stack("deploy", "--generate-only", cwd=tmp_path / "shop")
    assert result.returncode == 0, result.stderr
    assert "image: localhost/nc-ctr:latest" in (tmp_path / "shop" / "deploy" / "deployment.yaml").read_text()
    assert result.stderr.splitlines()[-1] == (
        "flask-stack: image localhost/nc-ctr:latest: the last `flask-stack build` of this project; push it to a "
        "registry the cluster pulls from (or pass --image)")


def test_generate_only_with_output_and_image(flask_stack, tmp_path):
    assert flask_stack("init", "shop", cwd=tmp_path).returncode == 0
    before = (tmp_path / "shop" / "deploy" / "deployment.yaml").read_text()  # init's, for the devfile's odo deploy
    out = tmp_path / "manifests"
    result = flask_stack("deploy", "--generate-only", "--output", str(out), "--image", "registry.example.com/shop:1.2",
                         "--project", str(tmp_path / "shop"))
    assert result.returncode == 0, result.stderr
    assert "image: registry.example.com/shop:1.2" in (out / "deployment.yaml").read_text()
    assert (tmp_path / "shop" / "deploy" / "deployment.yaml").read_text() == before  # --output: deploy/ untouched
    assert "image: shop:latest" in before


def test_bad_image_is_one_line(flask_stack, tmp_path):
    assert flask_stack("init", "shop", cwd=tmp_path).returncode == 0
    line = one_line_error(flask_stack("deploy", "--generate-only", "--image", "Not An Image", cwd=tmp_path / "shop"))
    assert "'Not An Image' is not an image reference" in line


def test_bad_url_prefix_is_one_line(flask_stack, tmp_path):
    assert flask_stack("init", "shop", cwd=tmp_path).returncode == 0
    line = one_line_error(flask_stack("deploy", "--generate-only", "--url-prefix", "/a/../b", cwd=tmp_path / "shop"))
    assert "--url-prefix='/a/../b' is not a URL path like /your/path (segment '..')" in line


def test_front_options_write_ingress_and_sidecar(flask_stack, tmp_path):
    assert flask_stack("init", "shop", cwd=tmp_path).returncode == 0
    result = flask_stack("deploy", "--generate-only", "--ingress", "shop.example.com", "--nginx-sidecar",
                         "--nginx-image", "registry.example.com/nginx:1", "--max-content-length", "2048",
                         cwd=tmp_path / "shop")
    assert result.returncode == 0, result.stderr
    out = tmp_path / "shop" / "deploy"
    assert sorted(p.name for p in out.iterdir()) == ["deployment.yaml", "hpa.yaml", "ingress.yaml", "nginx.yaml",
                                                     "pdb.yaml", "service.yaml"]
    deployment = (out / "deployment.yaml").read_text()
    assert "image: registry.example.com/nginx:1" in deployment and 'value: "2048"' in deployment
    assert "client_max_body_size 2k;" in (out / "nginx.yaml").read_text()
    assert 'proxy-body-size: "2k"' in (out / "ingress.yaml").read_text()


def test_tls_secret_without_ingress_is_one_line(flask_stack, tmp_path):
    assert flask_stack("init", "shop", cwd=tmp_path).returncode == 0
    line = one_line_error(flask_stack("deploy", "--generate-only", "--tls-secret", "shop-tls", cwd=tmp_path / "shop"))
    assert "--tls-secret needs --ingress HOST" in line



def test_the_body_limit_defaults_are_the_runtimes(monkeypatch):
    """One 16 MiB default in three places: the runtime's STACK_MAX_CONTENT_LENGTH default (server/settings.py),
    flask_stack.front's and the CLI's --max-content-length; a change to one fails here."""
    from flask_stack import front
    from flask_stack.cli import deploy

    monkeypatch.syspath_prepend(str(REPO / "image" / "project"))
    from stacksettings import DEFAULT_MAX_CONTENT_LENGTH

    option = next(p for p in deploy.params if p.name == "max_content_length")
    assert front.MAX_CONTENT_LENGTH == DEFAULT_MAX_CONTENT_LENGTH == option.default == 16 * 1024 * 1024
