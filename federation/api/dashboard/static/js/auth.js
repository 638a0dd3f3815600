// Who the page acts for: a bearer token kept in this tab's sessionStorage only.
//
// Local mode: the admin token printed by `continuum serve`, typed in or carried by the URL
// fragment (#token=...; a fragment never reaches a server). Keycloak mode: the authorization
// code flow with PKCE (RFC 7636) as a public client; the realm's endpoints come from its
// discovery document.

const TOKEN = "continuum.token";
const PENDING = "continuum.login";

export async function loadConfig() {
  const r = await fetch("/ui/config.json", { cache: "no-cache" });
  if (!r.ok) throw new Error(`cannot read /ui/config.json (${r.status})`);
  return r.json();
}

export function token() {
  const raw = sessionStorage.getItem(TOKEN);
  if (!raw) return null;
  const { value, expiresAt } = JSON.parse(raw);
  if (expiresAt && Date.now() > expiresAt) {
    sessionStorage.removeItem(TOKEN);
    return null;
  }
  return value;
}

export function setToken(value, expiresInSeconds) {
  const expiresAt = expiresInSeconds ? Date.now() + 1000 * (expiresInSeconds - 10) : null;
  sessionStorage.setItem(TOKEN, JSON.stringify({ value, expiresAt }));
}

export function forget() {
  sessionStorage.removeItem(TOKEN);
}

/** A token carried in the fragment (`#token=...`), taken and removed from the address bar. */
export function tokenFromFragment() {
  const m = /(?:^#|&)token=([^&]+)/.exec(location.hash);
  if (!m) return null;
  const value = decodeURIComponent(m[1]);
  history.replaceState(null, "", location.pathname + location.search + "#/");
  return value;
}

function b64url(bytes) {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function randomString(n) {
  return b64url(crypto.getRandomValues(new Uint8Array(n)));
}

async function discovery(issuer) {
  const r = await fetch(`${issuer.replace(/\/$/, "")}/.well-known/openid-configuration`);
  if (!r.ok) throw new Error(`the realm's discovery document answered ${r.status}`);
  return r.json();
}

function redirectUri() {
  return `${location.origin}/`;
}

/** Leave for the realm's login page (authorization code with PKCE, S256). */
export async function startKeycloakLogin(kc) {
  const meta = await discovery(kc.issuer);
  const verifier = randomString(48);
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier));
  const state = randomString(16);
  sessionStorage.setItem(
    PENDING,
    JSON.stringify({ verifier, state, tokenEndpoint: meta.token_endpoint, back: location.hash }),
  );
  const query = new URLSearchParams({
    response_type: "code",
    client_id: kc.client_id,
    redirect_uri: redirectUri(),
    scope: kc.scope || "openid",
    state,
    code_challenge: b64url(new Uint8Array(digest)),
    code_challenge_method: "S256",
  });
  location.assign(`${meta.authorization_endpoint}?${query}`);
}

/** Back from the realm with ?code=&state=: exchange the code for a token. True if done. */
export async function finishKeycloakLogin(kc) {
  const params = new URLSearchParams(location.search);
  if (!params.has("code") && !params.has("error")) return false;
  const pending = JSON.parse(sessionStorage.getItem(PENDING) || "null");
  sessionStorage.removeItem(PENDING);
  const back = (pending && pending.back) || "#/";
  history.replaceState(null, "", `/${back}`);
  if (params.has("error")) {
    throw new Error(`login refused: ${params.get("error_description") || params.get("error")}`);
  }
  if (!pending || params.get("state") !== pending.state) {
    throw new Error("login answer does not match this tab's request (state): log in again");
  }
  const r = await fetch(pending.tokenEndpoint, {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({
      grant_type: "authorization_code",
      code: params.get("code"),
      redirect_uri: redirectUri(),
      client_id: kc.client_id,
      code_verifier: pending.verifier,
    }),
  });
  const body = await r.json().catch(() => ({}));
  if (!r.ok || !body.access_token) {
    throw new Error(`the realm refused the code: ${body.error_description || body.error || r.status}`);
  }
  setToken(body.access_token, body.expires_in);
  return true;
}
