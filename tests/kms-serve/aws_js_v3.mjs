// The AWS SDK for JavaScript v3 (@aws-sdk/client-kms, @aws-sdk/client-secrets-manager is
// driven from secrets tests) against `envseal kms serve` (issue 17).
//
// Driven by tests/kms-serve/main.rs with AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID,
// AWS_SECRET_ACCESS_KEY, AWS_REGION and NODE_PATH. Prints one `ok` line per check.
import assert from 'node:assert';
import { createRequire } from 'node:module';
import path from 'node:path';

const require = createRequire(path.join(process.env.NODE_PATH, 'x.js'));
const kms = require('@aws-sdk/client-kms');

const c = new kms.KMSClient({ maxAttempts: 1 });

async function expectError(what, name, f) {
  try {
    await f();
  } catch (e) {
    assert.strictEqual(e.name, name, `${what}: expected ${name}, got ${e.name}: ${e.message}`);
    console.log(`ok ${what}: rejected with ${name}`);
    return e;
  }
  throw new Error(`${what}: expected ${name}, but the call succeeded`);
}

const created = await c.send(new kms.CreateKeyCommand({ Description: 'js v3', Tags: [{ TagKey: 'team', TagValue: 'web' }] }));
const KeyId = created.KeyMetadata.KeyId;
console.log(`ok CreateKey ${KeyId}`);

const ctx = { app: 'web' };
const g = await c.send(new kms.GenerateDataKeyCommand({ KeyId, KeySpec: 'AES_256', EncryptionContext: ctx }));
assert.strictEqual(g.Plaintext.length, 32);
const d = await c.send(new kms.DecryptCommand({ CiphertextBlob: g.CiphertextBlob, EncryptionContext: ctx }));
assert.deepStrictEqual(Buffer.from(d.Plaintext), Buffer.from(g.Plaintext));
await expectError('Decrypt with another context', 'InvalidCiphertextException', () =>
  c.send(new kms.DecryptCommand({ CiphertextBlob: g.CiphertextBlob, EncryptionContext: { app: 'api' } })));
console.log('ok GenerateDataKey/Decrypt');

const r = await c.send(new kms.GenerateRandomCommand({ NumberOfBytes: 48 }));
assert.strictEqual(r.Plaintext.length, 48);
await c.send(new kms.TagResourceCommand({ KeyId, Tags: [{ TagKey: 'stage', TagValue: 'test' }] }));
await c.send(new kms.UntagResourceCommand({ KeyId, TagKeys: ['team'] }));
const tags = await c.send(new kms.ListResourceTagsCommand({ KeyId }));
assert.deepStrictEqual(tags.Tags.map((t) => t.TagKey), ['stage']);
await c.send(new kms.UpdateKeyDescriptionCommand({ KeyId, Description: 'renamed' }));
const m = await c.send(new kms.DescribeKeyCommand({ KeyId }));
assert.strictEqual(m.KeyMetadata.Description, 'renamed');
console.log('ok GenerateRandom/TagResource/UntagResource/ListResourceTags/UpdateKeyDescription');

const other = (await c.send(new kms.CreateKeyCommand({}))).KeyMetadata.KeyId;
await c.send(new kms.CreateAliasCommand({ AliasName: 'alias/js-v3', TargetKeyId: KeyId }));
await c.send(new kms.UpdateAliasCommand({ AliasName: 'alias/js-v3', TargetKeyId: other }));
const viaAlias = await c.send(new kms.DescribeKeyCommand({ KeyId: 'alias/js-v3' }));
assert.strictEqual(viaAlias.KeyMetadata.KeyId, other);
console.log('ok CreateAlias/UpdateAlias');

const grant = await c.send(new kms.CreateGrantCommand({
  KeyId, GranteePrincipal: 'arn:aws:iam::111122223333:role/app', Operations: ['Decrypt'],
  Constraints: { EncryptionContextSubset: ctx },
}));
const grants = await c.send(new kms.ListGrantsCommand({ KeyId }));
assert.strictEqual(grants.Grants[0].GrantId, grant.GrantId);
await c.send(new kms.DecryptCommand({ CiphertextBlob: g.CiphertextBlob, EncryptionContext: ctx, GrantTokens: [grant.GrantToken] }));
await expectError('an unknown grant token', 'InvalidGrantTokenException', () =>
  c.send(new kms.DecryptCommand({ CiphertextBlob: g.CiphertextBlob, EncryptionContext: ctx, GrantTokens: ['nope'] })));
await c.send(new kms.RevokeGrantCommand({ KeyId, GrantId: grant.GrantId }));
assert.strictEqual((await c.send(new kms.ListGrantsCommand({ KeyId }))).Grants.length, 0);
console.log('ok CreateGrant/ListGrants/grant tokens/RevokeGrant');

const policy = await c.send(new kms.GetKeyPolicyCommand({ KeyId }));
assert.ok(JSON.parse(policy.Policy).Statement[0].Principal.AWS.endsWith(':root'));
const names = await c.send(new kms.ListKeyPoliciesCommand({ KeyId }));
assert.deepStrictEqual(names.PolicyNames, ['default']);
await expectError('GetPublicKey of a symmetric key', 'UnsupportedOperationException', () =>
  c.send(new kms.GetPublicKeyCommand({ KeyId })));
console.log('all AWS SDK for JavaScript v3 checks passed');
