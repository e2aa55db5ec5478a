// A real OpenID Provider for the end-to-end tests: node-oidc-provider
// (panva/node-oidc-provider, certified by the OpenID Foundation) with its
// development login and consent pages, on 127.0.0.1.
//
//   node oidc-provider.mjs '<json>'
//
// The JSON names the clients' redirect URIs and the accounts:
//   { "redirect_uris": ["http://127.0.0.1:PORT/__stamp/callback"],
//     "post_logout_redirect_uris": ["http://127.0.0.1:PORT/__stamp/"],
//     "accounts": { "quinn": { "groups": ["qa"], "email": "quinn@example.com" } } }
//
// Clients: `stamp-panel` (confidential, secret `panel-secret`, authorization
// code with PKCE) and `stamp-cli` (public, device authorization grant and
// refresh tokens). Any password signs an account in (development
// interactions); an account not listed has no groups. Prints
// `ready http://127.0.0.1:PORT` once it listens, and exits when stdin closes,
// so it never outlives the test that started it.
import http from 'node:http';
import Provider from 'oidc-provider';

const opts = JSON.parse(process.argv[2] || '{}');
const accounts = opts.accounts || {};

const server = http.createServer();
server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;
  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: 'stamp-panel',
        client_secret: 'panel-secret',
        redirect_uris: opts.redirect_uris || [],
        post_logout_redirect_uris: opts.post_logout_redirect_uris || [],
        grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'],
        token_endpoint_auth_method: 'client_secret_basic',
      },
      {
        client_id: 'stamp-cli',
        application_type: 'native',
        token_endpoint_auth_method: 'none',
        grant_types: ['urn:ietf:params:oauth:grant-type:device_code', 'refresh_token'],
        response_types: [],
        redirect_uris: [],
      },
    ],
    pkce: { required: () => true },
    features: {
      devInteractions: { enabled: true },
      deviceFlow: { enabled: true },
      rpInitiatedLogout: { enabled: true },
    },
    // Scope claims go into the ID token, as most providers do for these.
    conformIdTokenClaims: false,
    scopes: ['openid', 'offline_access', 'email', 'profile', 'groups'],
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name', 'preferred_username'],
      groups: ['groups'],
    },
    // Refresh tokens for the CLI without the consent prompt dance of
    // offline_access on a device grant.
    issueRefreshToken: async (ctx, client, code) =>
      client.grantTypeAllowed('refresh_token') && code.scopes.has('offline_access'),
    ttl: { IdToken: 3600, AccessToken: 3600, DeviceCode: 600 },
    async findAccount(ctx, id) {
      const a = accounts[id] || {};
      return {
        accountId: id,
        async claims() {
          return {
            sub: id,
            email: a.email || `${id}@example.com`,
            email_verified: a.email_verified ?? true,
            name: a.name || id,
            preferred_username: id,
            groups: a.groups || [],
          };
        },
      };
    },
  });
  provider.proxy = false;
  server.on('request', provider.callback());
  process.stdout.write(`ready ${issuer}\n`);
});

process.stdin.resume();
process.stdin.on('end', () => process.exit(0));
process.stdin.on('close', () => process.exit(0));
