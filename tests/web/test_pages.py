"""The pages' server side, through Django's test client (no browser)."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery"


def test_the_chat_page_sends_visitors_who_are_not_logged_in_to_log_in(client):
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"] == f"{reverse('login')}?next=/"


def test_the_chat_page_is_at_the_site_root_for_a_logged_in_user(client, alice):
    client.force_login(alice)
    response = client.get("/")
    assert response.status_code == 200
    assert reverse("chat-page") == "/"
    html = response.content.decode()
    assert 'id="message-input"' in html and 'aria-label="Conversation"' in html
    config = json.loads(html.split('id="chat-config" type="application/json">', 1)[1].split("</script>", 1)[0])
    assert config["wsPath"] == "/ws/chat" and config["maxMessageChars"] > 0


def test_the_pages_forbid_inline_and_foreign_scripts(client, alice):
    client.force_login(alice)
    for url in ("/", "/keys/", "/login/"):
        policy = client.get(url)["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "object-src 'none'" in policy, url
        assert "unsafe-inline" not in policy


def test_the_login_page_has_labelled_fields(client):
    html = client.get("/login/").content.decode()
    assert '<label for="id_username">Username</label>' in html
    assert '<label for="id_password">Password</label>' in html


def test_logging_in_opens_the_chat(client, alice):
    response = client.post("/login/", {"username": "alice", "password": PASSWORD})
    assert response.status_code == 302 and response["Location"] == "/"


def test_a_wrong_password_shows_an_error_on_the_login_page(client, alice):
    response = client.post("/login/", {"username": "alice", "password": "nope"})
    assert response.status_code == 200
    assert 'role="alert"' in response.content.decode()


def test_logging_out_takes_a_post_and_ends_the_session(client, alice):
    client.force_login(alice)
    assert client.get("/logout/").status_code == 405
    response = client.post("/logout/")
    assert response.status_code == 302 and response["Location"] == reverse("login")
    assert client.get("/").status_code == 302


def test_sign_up_is_not_found_while_it_is_disabled(client, settings):
    settings.SIGNUP_ENABLED = False
    assert client.get("/signup/").status_code == 404
    assert client.post("/signup/", {"username": "eve"}).status_code == 404
    assert "/signup/" not in client.get("/login/").content.decode()


def test_sign_up_creates_an_account_and_logs_it_in_when_enabled(client, settings):
    settings.SIGNUP_ENABLED = True
    assert "/signup/" in client.get("/login/").content.decode()
    form = {"username": "dora", "password1": "a long new passphrase", "password2": "a long new passphrase"}
    response = client.post("/signup/", form)
    assert response.status_code == 302 and response["Location"] == "/"
    assert get_user_model().objects.filter(username="dora").exists()
    assert client.get("/").status_code == 200


def test_sign_up_rejects_a_weak_password(client, settings):
    settings.SIGNUP_ENABLED = True
    response = client.post("/signup/", {"username": "dora", "password1": "123", "password2": "123"})
    assert response.status_code == 200
    assert not get_user_model().objects.filter(username="dora").exists()


def test_the_keys_page_needs_a_login(client):
    response = client.get("/keys/")
    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))


def test_the_keys_page_offers_the_metrics_scope_to_staff_only(client, alice, make_user):
    client.force_login(alice)
    assert 'value="metrics"' not in client.get("/keys/").content.decode()
    client.force_login(make_user("root", is_staff=True))
    assert 'value="metrics"' in client.get("/keys/").content.decode()


def test_the_login_page_says_how_to_get_an_account_either_way(client, settings):
    settings.SIGNUP_ENABLED = False
    closed = client.get("/login/").content.decode()
    assert "made by its administrator" in closed and "/signup/" not in closed
    settings.SIGNUP_ENABLED = True
    opened = client.get("/login/").content.decode()
    assert 'href="/signup/"' in opened and "made by its administrator" not in opened


def test_favicon_ico_leads_to_the_static_icon(client):
    response = client.get("/favicon.ico")
    assert response.status_code == 301 and response["Location"] == "/static/favicon.ico"
