// A real OpenID Connect provider for the tests (the npm package oidc-provider), set up
// by a JSON file: node provider.mjs CONFIG. The file names the issuer, the port, the
// client, the signing keys and a file of accounts ({id: {email, email_verified, groups}})
// read at every sign-in, so that a test can remove someone. Its login page takes any
// password (oidc-provider's development interactions); consent is granted at once.
import fs from 'node:fs';
import Provider from 'oidc-provider';

const config = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const accounts = () => JSON.parse(fs.readFileSync(config.accounts, 'utf8'));

const provider = new Provider(config.issuer, {
  clients: [config.client],
  jwks: config.jwks,
  cookies: { keys: ['test cookies only'] },
  pkce: { required: () => true },
  conformIdTokenClaims: false,
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['preferred_username'],
    groups: ['groups'],
  },
  features: { devInteractions: { enabled: true } },
  async findAccount(ctx, id) {
    const account = accounts()[id];
    if (!account) return undefined;
    return { accountId: id, async claims() { return { sub: id, ...account }; } };
  },
  async loadExistingGrant(ctx) {
    const grant = new ctx.oidc.provider.Grant({
      clientId: ctx.oidc.client.clientId,
      accountId: ctx.oidc.session.accountId,
    });
    grant.addOIDCScope('openid email profile groups');
    await grant.save();
    return grant;
  },
});
provider.on('server_error', (ctx, error) => console.error('server_error', error));
provider.listen(config.port, config.host, () => console.log('listening'));
