"""Page URLs of the account: the API keys page, log in, log out, sign up."""

from django.urls import path

from accounts import views

urlpatterns = [
    path("keys/", views.keys_page, name="keys-page"),
    path("login/", views.LoginView.as_view(), name="login"),
    path("logout/", views.LogoutView.as_view(), name="logout"),
    # Always routed, so that turning SIGNUP_ENABLED on or off needs no URL reload; the view
    # answers 404 while sign-up is off.
    path("signup/", views.signup, name="signup"),
    path("favicon.ico", views.favicon, name="favicon"),
]
