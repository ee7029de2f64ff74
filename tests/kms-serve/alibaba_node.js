// The Alibaba Cloud KMS SDK for Node.js (@alicloud/kms20160120, on @alicloud/rpc-client: RPC
// style, HMAC-SHA1) against `envseal kms serve` (issue 17).
//
// Driven by tests/kms-serve/main.rs, which passes KMS_ENDPOINT (host:port), KMS_AK, KMS_SK
// and NODE_PATH (where npm installed the SDK). Prints one `ok` line per check; any failure
// exits non-zero.
'use strict';
const assert = require('assert');
const sdk = require('@alicloud/kms20160120');
const Client = sdk.default;

// KMS_PROTOCOL=default leaves the protocol to the SDK, whose request classes hard-code
// https (the TLS test trusts the server's CA through NODE_EXTRA_CA_CERTS).
const cfg = (secret) => {
  const c = { accessKeyId: process.env.KMS_AK, accessKeySecret: secret, endpoint: process.env.KMS_ENDPOINT, regionId: 'cn-hangzhou' };
  if (process.env.KMS_PROTOCOL !== 'default') c.protocol = 'http';
  return c;
};

async function expectError(what, code, f) {
  try {
    await f();
  } catch (e) {
    // rpc-client reports the service's Code with `Error` appended.
    assert.strictEqual(e.code, `${code}Error`, `${what}: expected ${code}, got ${e.code}: ${e.message}`);
    console.log(`ok ${what}: rejected with ${code}`);
    return e;
  }
  throw new Error(`${what}: expected ${code}, but the call succeeded`);
}

async function main() {
  const c = new Client(cfg(process.env.KMS_SK));
  const created = await c.createKey(new sdk.CreateKeyRequest({ description: 'node sdk' }));
  const keyId = created.keyMetadata.keyId;
  assert.ok(keyId, 'CreateKey returns a key id');
  console.log(`ok CreateKey ${keyId}`);

  // No context: fine both ways.
  const g = await c.generateDataKey(new sdk.GenerateDataKeyRequest({ keyId }));
  assert.strictEqual(Buffer.from(g.plaintext, 'base64').length, 32);
  const d = await c.decrypt(new sdk.DecryptRequest({ ciphertextBlob: g.ciphertextBlob }));
  assert.strictEqual(d.plaintext, g.plaintext);
  console.log('ok GenerateDataKey/Decrypt without a context');

  // The SDK flattens a map-typed context into EncryptionContext.KEY=VALUE parameters: refused,
  // never a data key silently made without its context.
  const e = await expectError('flattened EncryptionContext', 'InvalidParameter', () =>
    c.generateDataKey(new sdk.GenerateDataKeyRequest({ keyId, encryptionContext: { app: 'web' } })));
  assert.ok(/JSON object/.test(e.message), e.message);

  // The context as one JSON string (what the API documents) is bound.
  const ctx = JSON.stringify({ app: 'web', tenant: 'a b&c' });
  const g2 = await c.generateDataKey(new sdk.GenerateDataKeyRequest({ keyId, encryptionContext: ctx }));
  const d2 = await c.decrypt(new sdk.DecryptRequest({ ciphertextBlob: g2.ciphertextBlob, encryptionContext: ctx }));
  assert.strictEqual(d2.plaintext, g2.plaintext);
  await expectError('Decrypt without the bound context', 'InvalidParameter.EncryptionContext', () =>
    c.decrypt(new sdk.DecryptRequest({ ciphertextBlob: g2.ciphertextBlob })));
  console.log('ok GenerateDataKey/Decrypt with a JSON-string context');

  const keys = await c.listKeys(new sdk.ListKeysRequest({ pageSize: 100 }));
  assert.ok(keys.keys.key.some((k) => k.keyId === keyId));
  const regions = await c.describeRegions(new sdk.DescribeRegionsRequest({}));
  assert.ok(regions.regions.region.some((r) => r.regionId === 'cn-hangzhou'));
  console.log('ok ListKeys/DescribeRegions');

  // Key attributes: alias moved with UpdateAlias, description, tags, rotation policy.
  const other = (await c.createKey(new sdk.CreateKeyRequest({ description: 'other' }))).keyMetadata.keyId;
  await c.createAlias(new sdk.CreateAliasRequest({ keyId, aliasName: 'alias/node-app' }));
  await c.updateAlias(new sdk.UpdateAliasRequest({ keyId: other, aliasName: 'alias/node-app' }));
  const byAlias = await c.describeKey(new sdk.DescribeKeyRequest({ keyId: 'alias/node-app' }));
  assert.strictEqual(byAlias.keyMetadata.keyId, other, 'UpdateAlias moved the alias');
  await c.updateKeyDescription(new sdk.UpdateKeyDescriptionRequest({ keyId, description: 'renamed' }));
  const described = await c.describeKey(new sdk.DescribeKeyRequest({ keyId }));
  assert.strictEqual(described.keyMetadata.description, 'renamed');
  await c.tagResource(new sdk.TagResourceRequest({
    keyId, tags: JSON.stringify([{ TagKey: 'team', TagValue: 'web' }, { TagKey: 'env', TagValue: 'dev' }]) }));
  await c.untagResource(new sdk.UntagResourceRequest({ keyId, tagKeys: JSON.stringify(['env']) }));
  const tags = await c.listResourceTags(new sdk.ListResourceTagsRequest({ keyId }));
  assert.deepStrictEqual(tags.tags.tag.map((t) => [t.tagKey, t.tagValue]), [['team', 'web']]);
  await c.updateRotationPolicy(new sdk.UpdateRotationPolicyRequest({
    keyId, enableAutomaticRotation: true, rotationInterval: '604800s' }));
  const rotating = await c.describeKey(new sdk.DescribeKeyRequest({ keyId }));
  assert.strictEqual(rotating.keyMetadata.automaticRotation, 'Enabled');
  assert.strictEqual(rotating.keyMetadata.rotationInterval, '604800s');
  console.log('ok UpdateAlias/UpdateKeyDescription/TagResource/UntagResource/ListResourceTags/UpdateRotationPolicy');

  const pw = await c.getRandomPassword(new sdk.GetRandomPasswordRequest({
    passwordLength: '24', excludePunctuation: 'true' }));
  assert.match(pw.randomPassword, /^[A-Za-z0-9]{24}$/);
  assert.match(pw.randomPassword, /[a-z]/);
  assert.match(pw.randomPassword, /[A-Z]/);
  assert.match(pw.randomPassword, /[0-9]/);
  await expectError('GetRandomPassword too short', 'InvalidParameter', () =>
    c.getRandomPassword(new sdk.GetRandomPasswordRequest({ passwordLength: '4' })));
  console.log('ok GetRandomPassword');

  const bad = new Client(cfg(process.env.KMS_SK + 'x'));
  const err = await expectError('wrong secret', 'SignatureDoesNotMatch', () =>
    bad.listKeys(new sdk.ListKeysRequest({})));
  assert.ok(/server string to sign is:POST&%2F&/.test(err.message), err.message);
  console.log('all Alibaba Node.js SDK checks passed');
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
