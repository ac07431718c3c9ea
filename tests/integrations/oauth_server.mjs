// A real OAuth 2.0 authorization server for the integration tests: the npm package
// `oidc-provider`, with PKCE (S256) required, refresh tokens that rotate on every use,
// a short access-token lifetime, and introspection and revocation enabled.
//
//   PORT            the port to listen on (127.0.0.1)
//   OAUTH_CLIENTS   JSON list of client metadata (client_id, client_secret, redirect_uris)
//   ACCESS_TTL      access-token lifetime in seconds
//
// Test-only routes beside the provider's own:
//   GET  /__stats                   {"refresh_success", "refresh_error"}: refresh grants seen
//   GET  /interaction/:uid          the pending interaction as JSON ({"uid", "prompt"})
//   POST /interaction/:uid/login    {"account"}: the person signs in as that account
// Consent is granted by `loadExistingGrant` for whatever scopes the client asked.
import http from 'node:http';
import Provider from 'oidc-provider';

const port = Number(process.env.PORT);
const issuer = `http://127.0.0.1:${port}`;
const stats = { refresh_success: 0, refresh_error: 0 };

const provider = new Provider(issuer, {
  clients: JSON.parse(process.env.OAUTH_CLIENTS),
  pkce: { methods: ['S256'], required: () => true },
  features: {
    devInteractions: { enabled: false },
    introspection: { enabled: true },
    revocation: { enabled: true },
  },
  scopes: ['openid', 'offline_access', 'read', 'write'],
  ttl: { AccessToken: Number(process.env.ACCESS_TTL || 120) },
  rotateRefreshToken: true,
  issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
  cookies: { keys: ['bastion-tests-cookie-key-0123456789abcdef'] },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  async findAccount(ctx, sub) {
    return { accountId: sub, async claims() { return { sub }; } };
  },
  async loadExistingGrant(ctx) {
    const grantId = ctx.oidc.result?.consent?.grantId
      || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) return ctx.oidc.provider.Grant.find(grantId);
    const grant = new ctx.oidc.provider.Grant({
      clientId: ctx.oidc.client.clientId,
      accountId: ctx.oidc.session.accountId,
    });
    grant.addOIDCScope(ctx.oidc.params.scope || 'read');
    await grant.save();
    return grant;
  },
});

provider.on('grant.success', (ctx) => {
  if (ctx.oidc.params.grant_type === 'refresh_token') stats.refresh_success += 1;
});
provider.on('grant.error', (ctx) => {
  if (ctx.oidc.params?.grant_type === 'refresh_token') stats.refresh_error += 1;
});

function readJson(req) {
  return new Promise((resolve, reject) => {
    let data = '';
    req.on('data', (chunk) => { data += chunk; });
    req.on('end', () => { try { resolve(data ? JSON.parse(data) : {}); } catch (e) { reject(e); } });
    req.on('error', reject);
  });
}

const callback = provider.callback();
const server = http.createServer(async (req, res) => {
  const url = new URL(req.url, issuer);
  try {
    if (url.pathname === '/__stats') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(stats));
      return;
    }
    const m = url.pathname.match(/^\/interaction\/([^/]+)(\/login)?$/);
    if (m) {
      const details = await provider.interactionDetails(req, res);
      if (!m[2]) {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ uid: details.uid, prompt: details.prompt.name }));
        return;
      }
      const body = await readJson(req);
      await provider.interactionFinished(
        req, res, { login: { accountId: body.account } }, { mergeWithLastSubmission: false },
      );
      return;
    }
    callback(req, res);
  } catch (err) {
    res.writeHead(500, { 'content-type': 'text/plain' });
    res.end(String(err && err.message));
  }
});
server.listen(port, '127.0.0.1', () => { process.stdout.write(`ready ${issuer}\n`); });
