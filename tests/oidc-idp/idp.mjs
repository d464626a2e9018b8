// A real OpenID Provider for certkeep's OIDC tests (oidc-provider). Started by the test with
// the path of a JSON file: {"port": N, "id_token_ttl": seconds, "clients": [{"client_id",
// "client_secret", "redirect_uris": [..]}]}. Issuer http://127.0.0.1:PORT; dev interactions (any password)
// for three users; the groups claim is put in the ID token; a fresh RS256 key per start.
// Prints a ready line on stderr.
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import Provider from 'oidc-provider';

const settings = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const issuer = `http://127.0.0.1:${settings.port}`;

const users = {
  alice: { name: 'Alice Admin', groups: ['pki-admins', 'staff'] },
  bob: { name: 'Bob Reader', groups: ['pki-readers'] },
  carol: { name: 'Carol Student', groups: ['students'] },
};

// A signing key of this instance only (oidc-provider's quick-start keys are the same
// everywhere): a restart rotates it, and two instances never share one.
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: randomUUID(), use: 'sig', alg: 'RS256' };

const provider = new Provider(issuer, {
  jwks: { keys: [signingKey] },
  clients: settings.clients.map((c) => ({
    client_id: c.client_id,
    client_secret: c.client_secret,
    redirect_uris: c.redirect_uris,
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  })),
  pkce: { required: () => true },
  ttl: { Interaction: 600, Session: 3600, Grant: 3600, AccessToken: 600, IdToken: settings.id_token_ttl ?? 600 },
  scopes: ['openid', 'profile', 'groups'],
  claims: { openid: ['sub'], profile: ['name'], groups: ['groups'] },
  // Scope claims go into the ID token, not only to userinfo.
  conformIdTokenClaims: false,
  async findAccount(ctx, id) {
    const user = users[id];
    if (!user) return undefined;
    return { accountId: id, async claims() { return { sub: id, ...user }; } };
  },
  // First-party clients: the grant is given without a consent screen.
  async loadExistingGrant(ctx) {
    const grant = new ctx.oidc.provider.Grant({
      clientId: ctx.oidc.client.clientId,
      accountId: ctx.oidc.session.accountId,
    });
    grant.addOIDCScope('openid profile groups');
    await grant.save();
    return grant;
  },
});

provider.listen(settings.port, '127.0.0.1', () => {
  console.error(`oidc-idp ready: ${issuer}`);
});
