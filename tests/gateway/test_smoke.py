from tests.support.registry import push_image


def test_push_and_pull_image(client):
    digest, payload = push_image(client, "smoke/app", "v1")
    r = client.get("/v2/smoke/app/manifests/v1")
    assert r.status_code == 200
    assert r.content == payload
    assert r.headers["docker-content-digest"] == digest
