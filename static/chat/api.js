// The REST API as the logged-in page calls it: session cookie plus Django's CSRF token.

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function csrfToken() {
  const input = document.querySelector("input[name=csrfmiddlewaretoken]");
  if (input) return input.value;
  const cookie = document.cookie.split("; ").find((part) => part.startsWith("csrftoken="));
  return cookie ? decodeURIComponent(cookie.slice("csrftoken=".length)) : "";
}

/** Call the API; resolve with the parsed JSON (null for 204), reject with ApiError. */
export async function api(path, { method = "GET", body, base = "/api/v1" } = {}) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (!["GET", "HEAD"].includes(method)) headers["X-CSRFToken"] = csrfToken();
  let response;
  try {
    response = await fetch(base + path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
    });
  } catch {
    throw new ApiError(0, "network_error", "The server cannot be reached. Check your connection.");
  }
  if (response.status === 401 && document.body.dataset.loginUrl) {
    // The session ended (logged out in another tab, expired): log in again, then come back here.
    location.assign(`${document.body.dataset.loginUrl}?next=${encodeURIComponent(location.pathname + location.search)}`);
  }
  if (response.status === 204) return null;
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (!response.ok) {
    const code = (data && data.code) || `http_${response.status}`;
    const message = (data && (data.message || data.detail)) || `The server answered ${response.status}.`;
    throw new ApiError(response.status, code, message);
  }
  return data;
}
