// The sign-in page: a plain form (Enter submits) for an admin account. Bakend has no admin
// until one is made, and the API cannot tell an anonymous page whether one exists, so the page
// always says how to make the first one instead of leaving a new user at a dead end.

import * as api from "./api.js";
import { h, mount } from "./dom.js";

export default function signin(root, { message, onSignedIn }) {
  let register = false;
  const email = h("input", { type: "email", name: "email", id: "email", autocomplete: "username", required: true });
  const password = h("input", { type: "password", name: "password", id: "password", autocomplete: "current-password", required: true });
  const error = h("p", { class: "error", id: "signin-error", role: "alert", hidden: !message }, message || "");
  const submit = h("button", { type: "submit", class: "primary" }, "Sign in");
  const heading = h("h1", {}, "Sign in to Bakend");
  const toggle = h("button", { type: "button", class: "link", id: "register-toggle" }, "Register it here");

  toggle.addEventListener("click", () => {
    register = !register;
    heading.textContent = register ? "Register the admin account" : "Sign in to Bakend";
    submit.textContent = register ? "Register" : "Sign in";
    password.autocomplete = register ? "new-password" : "current-password";
    toggle.textContent = register ? "Back to sign-in" : "Register it here";
  });

  const form = h("form", { class: "signin", id: "signin-form", novalidate: true },
    heading,
    h("label", { for: "email" }, "Email"), email,
    h("label", { for: "password" }, "Password"), password,
    error,
    submit);

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    error.hidden = true;
    submit.disabled = true;
    try {
      await api.signIn(email.value.trim(), password.value, register);
      onSignedIn();
    } catch (err) {
      error.textContent = err && err.isApiError ? err.message : `Sign-in failed: ${err}`;
      error.hidden = false;
      if (err && err.code === "not_admin") error.classList.add("not-admin");
      password.select();
      if (!(err && err.isApiError)) throw err;
    } finally {
      submit.disabled = false;
    }
  });

  const help = h("aside", { class: "first-run", id: "first-run" },
    h("h2", {}, "No admin account yet?"),
    h("p", {}, "The dashboard is for admins. A new project has none until you make one. In the project folder, run:"),
    h("pre", {}, "bak admin create you@example.com"),
    h("p", {}, "It asks for a password (or reads one line with --password-stdin) and works while the server runs. It also promotes an existing account."),
    h("p", {}, "Or start the server with BAKEND_ADMIN_EMAIL=you@example.com and register that address: ", toggle));

  mount(root, h("div", { class: "signin-page" }, form, help));
  email.focus();
}
