// A real OpenID Connect provider (oidc-provider 9) on 127.0.0.1 that issues Keycloak-shaped JWT access
// tokens, for modelport's tests. Started by tests/oidc_provider.py: `node provider.mjs CONFIG.json`.
//
// CONFIG holds: port (0 = any free one), issuer_path ("/realms/test"), audience, jwks (private keys; the
// first one signs), accounts ({name: {password, groups, roles, email}}), clients (client metadata) and
// access_token_ttl (seconds). Once listening it prints one JSON line to stdout: {"issuer": ..., "port": ...}.
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';

import Provider, { errors } from 'oidc-provider';

const OIDC_SCOPE = 'openid profile email';

// stdout carries only the ready line; oidc-provider's notices (console.info) go to the log with the rest.
console.info = console.error;
console.log = console.error;

const settings = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const realmPath = (settings.issuer_path ?? '').replace(/\/+$/, '');
// A resource indicator must be an absolute URI; the audience ("modelport") need not be one.
const resource = URL.canParse(settings.audience) ? settings.audience : `urn:${settings.audience}`;

let handler = (_req, res) => {
  res.writeHead(503).end();
};
const server = createServer((req, res) => handler(req, res));
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(settings.port, '127.0.0.1', resolve);
});
const { port } = server.address();
const issuer = `http://127.0.0.1:${port}${realmPath}`;

const provider = new Provider(issuer, configuration());
const oidc = provider.callback();
handler = (req, res) => {
  if (req.url.startsWith('/interaction/')) {
    interaction(req, res).catch((error) => fail(res, error));
  } else if (!realmPath) {
    oidc(req, res);
  } else if (underRealm(req.url)) {
    // Mounted under the realm path, as the oidc-provider docs mount it in a hapi or nest application.
    const rest = req.url.slice(realmPath.length);
    req.originalUrl = req.url;
    req.url = rest.startsWith('/') ? rest : `/${rest}`;
    oidc(req, res);
  } else {
    res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
  }
};

// The parent keeps our stdin open; when it goes away, so do we.
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();

process.stdout.write(`${JSON.stringify({ issuer, port })}\n`);

function configuration() {
  const ttl = settings.access_token_ttl;
  return {
    clients: settings.clients,
    jwks: settings.jwks,
    findAccount,
    claims: {
      openid: ['sub'],
      profile: ['name', 'preferred_username', 'groups'],
      email: ['email', 'email_verified'],
    },
    // Scope claims go into the ID token too, as Keycloak puts them there.
    conformIdTokenClaims: false,
    cookies: {
      keys: [randomBytes(32).toString('base64url')],
      // Plain http on loopback: cookies must not be marked Secure.
      long: { httpOnly: true, sameSite: 'lax', secure: false },
      short: { httpOnly: true, sameSite: 'lax', secure: false },
    },
    features: {
      devInteractions: { enabled: false },
      resourceIndicators: {
        enabled: true,
        defaultResource: async (_ctx, _client, oneOf) => oneOf ?? resource,
        useGrantedResource: async () => true,
        getResourceServerInfo,
      },
    },
    // Keycloak's endpoint paths, for clients that build them from the realm URL as keycloak-js does.
    routes: {
      authorization: '/protocol/openid-connect/auth',
      token: '/protocol/openid-connect/token',
      jwks: '/protocol/openid-connect/certs',
      userinfo: '/protocol/openid-connect/userinfo',
      end_session: '/protocol/openid-connect/logout',
      revocation: '/protocol/openid-connect/revoke',
      introspection: '/protocol/openid-connect/token/introspect',
    },
    interactions: { url: async (_ctx, { uid }) => `/interaction/${uid}` },
    // The browser test runs the code flow from a page on another loopback origin.
    clientBasedCORS: () => true,
    extraTokenClaims,
    ttl: {
      AccessToken: ttl,
      AuthorizationCode: 60,
      IdToken: ttl,
      Interaction: 600,
      Session: 3600,
      Grant: 3600,
    },
    renderError: async (ctx, out) => {
      ctx.type = 'text/plain';
      ctx.body = `${out.error}: ${out.error_description ?? ''}\n`;
    },
  };
}

function underRealm(url) {
  return url === realmPath || url.startsWith(`${realmPath}/`) || url.startsWith(`${realmPath}?`);
}

async function getResourceServerInfo(_ctx, indicator) {
  if (indicator !== resource) {
    throw new errors.InvalidTarget();
  }
  return {
    scope: OIDC_SCOPE,
    audience: settings.audience,
    accessTokenTTL: settings.access_token_ttl,
    accessTokenFormat: 'jwt',
    jwt: { sign: { alg: 'RS256' } },
  };
}

async function findAccount(_ctx, id) {
  const account = settings.accounts[id];
  if (!account) {
    return undefined;
  }
  return {
    accountId: id,
    async claims() {
      return {
        sub: id,
        name: id,
        preferred_username: id,
        groups: account.groups ?? [],
        email: account.email,
        email_verified: account.email !== undefined,
      };
    },
  };
}

// The claims a Keycloak access token carries beyond the standard ones.
async function extraTokenClaims(_ctx, token) {
  if (token.kind !== 'AccessToken') {
    return undefined;
  }
  const account = settings.accounts[token.accountId] ?? {};
  return {
    typ: 'Bearer',
    azp: token.clientId,
    preferred_username: token.accountId,
    email: account.email,
    groups: account.groups ?? [],
    realm_access: { roles: account.roles ?? [] },
  };
}

async function interaction(req, res) {
  const [, uid, action] = /^\/interaction\/([^/?]+)(\/login)?\/?(?:\?.*)?$/.exec(req.url) ?? [];
  if (!uid) {
    res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
    return;
  }
  res.setHeader('cache-control', 'no-store');
  let details;
  try {
    details = await provider.interactionDetails(req, res);
  } catch (error) {
    if (!(error instanceof errors.SessionNotFound)) {
      throw error;
    }
    res.writeHead(400, { 'content-type': 'text/plain' }).end('the login session has expired\n');
    return;
  }
  if (details.prompt.name === 'consent') {
    // Consent is granted without asking, as for a Keycloak client with consent turned off.
    const grantId = await grantConsent(details, details.session.accountId);
    await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
  } else if (req.method === 'GET' && !action) {
    sendLogin(res, uid, 200);
  } else if (req.method === 'POST' && action) {
    const form = await readForm(req);
    const username = form.get('username') ?? '';
    if (!passwordMatches(username, form.get('password') ?? '')) {
      sendLogin(res, uid, 401, 'Invalid username or password.');
      return;
    }
    const grantId = await grantConsent(details, username);
    const result = { login: { accountId: username }, consent: { grantId } };
    await provider.interactionFinished(req, res, result, { mergeWithLastSubmission: false });
  } else {
    res.writeHead(405, { 'content-type': 'text/plain' }).end('method not allowed\n');
  }
}

// Grants what the client asked for, and always the OIDC scopes and the audience's resource scope.
async function grantConsent({ grantId, params, prompt: { details }, session }, accountId) {
  const existing = grantId && session?.accountId === accountId ? await provider.Grant.find(grantId) : undefined;
  const grant = existing ?? new provider.Grant({ accountId, clientId: params.client_id });
  grant.addOIDCScope(OIDC_SCOPE);
  grant.addResourceScope(resource, OIDC_SCOPE);
  if (details.missingOIDCScope) {
    grant.addOIDCScope(details.missingOIDCScope.join(' '));
  }
  if (details.missingOIDCClaims) {
    grant.addOIDCClaims(details.missingOIDCClaims);
  }
  for (const [indicator, scopes] of Object.entries(details.missingResourceScopes ?? {})) {
    grant.addResourceScope(indicator, scopes.join(' '));
  }
  return grant.save();
}

function passwordMatches(username, password) {
  const account = Object.hasOwn(settings.accounts, username) ? settings.accounts[username] : undefined;
  const digest = (value) => createHash('sha256').update(value).digest();
  return account !== undefined && timingSafeEqual(digest(password), digest(account.password));
}

async function readForm(req) {
  const chunks = [];
  for await (const chunk of req) {
    chunks.push(chunk);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

function sendLogin(res, uid, status, error) {
  const message = error ? `<p id="error" role="alert">${error}</p>` : '';
  res.writeHead(status, { 'content-type': 'text/html; charset=utf-8' }).end(`<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Sign in</title></head>
<body>
<h1>Sign in to test</h1>
${message}
<form method="post" action="/interaction/${encodeURIComponent(uid)}/login" autocomplete="off">
<label for="username">Username</label> <input id="username" name="username" autofocus>
<label for="password">Password</label> <input id="password" name="password" type="password">
<button id="login" type="submit">Sign in</button>
</form>
</body>
</html>
`);
}

function fail(res, error) {
  console.error(error);
  if (!res.headersSent) {
    res.writeHead(500, { 'content-type': 'text/plain' });
  }
  res.end('internal error\n');
}
