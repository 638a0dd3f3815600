// A real OpenID Connect provider (panva's oidc-provider) served at Keycloak's URL paths.
//
// The continuum API tests cannot install a Keycloak server, so they run this instead:
// python-keycloak talks to it unmodified (well-known, token with client credentials,
// certs). It issues RS256 JWT access tokens shaped like Keycloak's: `aud` set by an
// audience mapper, `azp`, `realm_access.roles`, `resource_access.<client>.roles` and
// `eduperson_entitlement`, taken per client from the configuration file.
//
// Usage: node server.js CONFIG.json
//   CONFIG = {
//     "host": "127.0.0.1", "port": 0, "realm": "continuum", "audience": "continuum-api",
//     "keys": [<private JWK>, ...],            // the first RS256 key signs
//     "clients": [{"client_id": "...", "client_secret": "...", "ttl": 300,
//                  "audience": "<optional override>", "claims": {...}}],
//     "public_clients": [{"client_id": "...", "redirect_uris": ["http://127.0.0.1:PORT/"]}],
//     "users": {"<login>": {<Keycloak-shaped claims of that user's access tokens>}}
//   }
//
// A public client logs people in as Keycloak's standard flow does: authorization code with
// PKCE (S256), a login form (oidc-provider's development form: any password is accepted for
// a login listed in "users", as Keycloak would check it), no consent screen (Keycloak's
// default for a first-party client), and CORS at the token endpoint for the redirect URIs'
// origins (Keycloak's "web origins").
// Prints one JSON line {"ready": true, "port": N, "issuer": "..."} once it listens.

import { readFileSync } from 'node:fs';
import http from 'node:http';

import Provider from 'oidc-provider';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const host = config.host || '127.0.0.1';
const realm = config.realm || 'continuum';
const prefix = `/realms/${realm}`;
const byClient = new Map(config.clients.map((c) => [c.client_id, c]));
const publicClients = config.public_clients || [];
for (const c of publicClients) byClient.set(c.client_id, c);
const users = config.users || {};
const RESOURCE = 'urn:continuum:api';

const server = http.createServer();

server.listen(config.port || 0, host, () => {
  const { port } = server.address();
  const issuer = `http://${host}:${port}${prefix}`;

  const provider = new Provider(issuer, {
    clients: [
      ...config.clients.map((c) => ({
        client_id: c.client_id,
        client_secret: c.client_secret,
        grant_types: ['client_credentials'],
        redirect_uris: [],
        response_types: [],
        token_endpoint_auth_method: 'client_secret_post',
        scope: 'openid',
      })),
      ...publicClients.map((c) => ({
        client_id: c.client_id,
        grant_types: ['authorization_code'],
        redirect_uris: c.redirect_uris,
        response_types: ['code'],
        token_endpoint_auth_method: 'none',
        scope: 'openid',
      })),
    ],
    pkce: { required: () => true },
    // Logins are checked against "users" (Keycloak checks the password; this test realm
    // knows the login only).
    findAccount: async (_ctx, sub) => (users[sub] ? {
      accountId: sub,
      claims: async () => ({ sub, preferred_username: sub }),
    } : undefined),
    // No consent screen for the realm's own clients, as in Keycloak.
    loadExistingGrant: async (ctx) => {
      const { client, session } = ctx.oidc;
      const existing = ctx.oidc.result?.consent?.grantId || session.grantIdFor(client.clientId);
      if (existing) return ctx.oidc.provider.Grant.find(existing);
      const grant = new ctx.oidc.provider.Grant({ clientId: client.clientId, accountId: session.accountId });
      grant.addOIDCScope('openid');
      grant.addResourceScope(RESOURCE, 'openid');
      await grant.save();
      return grant;
    },
    jwks: { keys: config.keys },
    routes: {
      token: '/protocol/openid-connect/token',
      jwks: '/protocol/openid-connect/certs',
      userinfo: '/protocol/openid-connect/userinfo',
      introspection: '/protocol/openid-connect/token/introspect',
      revocation: '/protocol/openid-connect/revoke',
      end_session: '/protocol/openid-connect/logout',
      authorization: '/protocol/openid-connect/auth',
    },
    features: {
      devInteractions: { enabled: publicClients.length > 0 },
      clientCredentials: { enabled: true },
      introspection: { enabled: false },
      revocation: { enabled: false },
      resourceIndicators: {
        enabled: true,
        // Keycloak has no resource indicators: every token is for the API's audience.
        defaultResource: async () => RESOURCE,
        useGrantedResource: async () => true,
        getResourceServerInfo: async (_ctx, _resource, client) => {
          const c = byClient.get(client.clientId);
          return {
            scope: 'openid',
            audience: c.audience || config.audience,
            accessTokenTTL: c.ttl || 300,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg: 'RS256' } },
          };
        },
      },
    },
    // The Keycloak-shaped claims of each client's tokens (roles, entitlements).
    extraTokenClaims: async (_ctx, token) => {
      const c = byClient.get(token.clientId);
      const person = token.accountId ? { preferred_username: token.accountId, ...(users[token.accountId] || {}) } : {};
      return { azp: token.clientId, typ: 'Bearer', ...(c.claims || {}), ...person };
    },
  });
  provider.proxy = false;

  const handle = provider.callback();
  server.on('request', (req, res) => {
    if (req.url === prefix || req.url.startsWith(`${prefix}/`)) {
      req.originalUrl = req.url;
      req.url = req.url.slice(prefix.length) || '/';
      handle(req, res);
      return;
    }
    res.statusCode = 404;
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ error: 'not_found', path: req.url }));
  });

  process.stdout.write(`${JSON.stringify({ ready: true, port, issuer })}\n`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
