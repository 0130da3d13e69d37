// The console's sign-in page: POST /api/session with the API token; the server answers with an
// HttpOnly session cookie, so this script never keeps the token. /login#token=... signs in at once
// (the fragment never reaches the server, logs or Referer) and is removed from the address bar first.

const form = document.getElementById("login-form");
const input = document.getElementById("token");
const button = document.getElementById("sign-in");
const error = document.getElementById("login-error");

// Only a path on this site: "/x", never "//host" or "/\host" (browsers read both as another host).
function safeNext(raw) {
  if (typeof raw !== "string" || !raw.startsWith("/") || raw.startsWith("//") || raw.startsWith("/\\")) {
    return "/";
  }
  try {
    const url = new URL(raw, location.origin);
    return url.origin === location.origin ? url.pathname + url.search + url.hash : "/";
  } catch {
    return "/";
  }
}

function showError(message) {
  error.textContent = message;
  input.setAttribute("aria-invalid", "true");
  input.focus();
  input.select();
}

async function signIn(token) {
  button.disabled = true;
  error.textContent = "";
  try {
    const response = await fetch("/api/session", {
      method: "POST",
      headers: {"Content-Type": "application/json"},
      body: JSON.stringify({token}),
      credentials: "same-origin",
    });
    if (response.status === 204) {
      location.replace(safeNext(new URLSearchParams(location.search).get("next")));
      return;
    }
    let message = `Sign-in failed (HTTP ${response.status}).`;
    if (response.status === 401) {
      message = "Wrong API token.";
    } else {
      try {
        const body = await response.json();
        if (body && typeof body.error === "string") message = body.error;
      } catch { /* not JSON: keep the status line */ }
    }
    showError(message);
  } catch {
    showError("Cannot reach the server.");
  } finally {
    button.disabled = false;
  }
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  const token = input.value.trim();
  if (!token) {
    showError("Enter the API token.");
    return;
  }
  signIn(token);
});

const fragment = new URLSearchParams(location.hash.slice(1));
const linked = fragment.get("token");
if (linked) {
  // Out of the address bar and history before anything else happens.
  history.replaceState(null, "", location.pathname + location.search);
  signIn(linked);
}
