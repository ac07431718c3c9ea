// A SAML identity provider for Bastion's tests, built on samlify (an independent SAML
// implementation). Reads one JSON request per line on stdin, writes one JSON answer per
// line on stdout (prefixed with MARK). Operations:
//   {"op": "metadata", "idp": {...}}          -> {"ok": true, "metadata": "<xml>"}
//   {"op": "login", "idp": {...}, "sp_metadata": "<xml>", "request_url": url|null,
//    "user": {"email", "groups": [...]}, "sign": "assertion"|"response"|"both",
//    "overrides": {Tag: value|null}}         -> {"ok": true, "saml_response": b64,
//                                                "request_id", "relay_state", "request"}
// "idp" is {"entity_id", "sso_url", "key_pem", "cert_pems": [...], "signature_algorithm"?}: the key signs, every
// certificate is published in the metadata. With a request_url, the IdP parses OUR
// AuthnRequest from the redirect URL: schema-validates it, verifies its signature
// against the certificate in OUR metadata, and checks issuer, destination and ACS URL.
// Overrides replace the response template's values (Audience, Destination,
// SubjectRecipient, InResponseTo, ConditionsNotBefore, ConditionsNotOnOrAfter,
// SubjectConfirmationDataNotOnOrAfter, Issuer, StatusCode, NameID, NameIDFormat,
// IssueInstant, AssertionID); null drops the attribute or element.
'use strict';

const readline = require('readline');
const saml = require('samlify');
const validator = require('@authenio/samlify-node-xmllint');

saml.setSchemaValidator(validator);
const { SamlLib, Constants } = saml;
// Answers start with MARK: libraries (the wasm xmllint) may print to stdout too.
const MARK = '@@idp ';
const EMAIL_FORMAT = 'urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress';

function escapeXml(text) {
  return String(text)
    .replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;').replace(/'/g, '&apos;');
}

function identityProvider(idp) {
  return saml.IdentityProvider({
    entityID: idp.entity_id,
    privateKey: idp.key_pem,
    signingCert: idp.cert_pems,
    wantAuthnRequestsSigned: true,
    nameIDFormat: [EMAIL_FORMAT],
    singleSignOnService: [{ Binding: Constants.namespace.binding.redirect, Location: idp.sso_url }],
    ...(idp.signature_algorithm ? { requestSignatureAlgorithm: idp.signature_algorithm } : {}),
  });
}

function serviceProvider(spMetadata, sign) {
  // samlify signs the assertion when the SP metadata asks for signed assertions, and the
  // whole response when the SP wants signed messages (or does not want signed assertions).
  const wantAssertions = sign === 'assertion' || sign === 'both';
  const metadata = wantAssertions
    ? spMetadata
    : spMetadata.replace('WantAssertionsSigned="true"', 'WantAssertionsSigned="false"');
  return saml.ServiceProvider({ metadata, wantMessageSigned: sign === 'response' || sign === 'both' });
}

function parseRedirect(requestUrl) {
  const url = new URL(requestUrl);
  const raw = url.search.slice(1).split('&');
  // The signed octets are the parameters as they arrived, encoded, without Signature.
  const octetString = raw.filter((p) => !p.startsWith('Signature=')).join('&');
  const query = {};
  for (const [key, value] of url.searchParams) query[key] = value;
  return { url, query, octetString };
}

function attributeStatement(user) {
  const attrs = [];
  const value = (v) =>
    `<saml:AttributeValue xmlns:xs="http://www.w3.org/2001/XMLSchema" ` +
    `xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="xs:string">${escapeXml(v)}</saml:AttributeValue>`;
  for (const [name, values] of Object.entries(user.attributes || {})) {
    attrs.push(
      `<saml:Attribute Name="${escapeXml(name)}" ` +
      `NameFormat="urn:oasis:names:tc:SAML:2.0:attrname-format:basic">${values.map(value).join('')}</saml:Attribute>`,
    );
  }
  return attrs.length ? `<saml:AttributeStatement>${attrs.join('')}</saml:AttributeStatement>` : '';
}

async function login(req) {
  const idp = identityProvider(req.idp);
  const sp = serviceProvider(req.sp_metadata, req.sign || 'assertion');
  let requestInfo = {};
  let relayState = null;
  let request = null;
  if (req.request_url) {
    const { url, query, octetString } = parseRedirect(req.request_url);
    requestInfo = await idp.parseLoginRequest(sp, 'redirect', { query, octetString });
    request = requestInfo.extract.request;
    const issuer = requestInfo.extract.issuer;
    const spEntity = sp.entityMeta.getEntityID();
    const acs = sp.entityMeta.getAssertionConsumerService('post');
    if (issuer !== spEntity) throw new Error(`request issuer ${issuer} is not ${spEntity}`);
    if (request.destination !== req.idp.sso_url) throw new Error(`request destination ${request.destination}`);
    if (request.assertionConsumerServiceUrl !== acs) throw new Error(`request ACS ${request.assertionConsumerServiceUrl} is not ${JSON.stringify(acs)}`);
    if (`${url.origin}${url.pathname}` !== req.idp.sso_url) throw new Error('request sent to another URL');
    if (!request.id) throw new Error('request without ID');
    relayState = query.RelayState === undefined ? null : query.RelayState;
  }
  const now = new Date();
  const later = new Date(now.getTime() + 5 * 60 * 1000);
  const user = req.user || {};
  const acs = sp.entityMeta.getAssertionConsumerService('post');
  const values = {
    ID: idp.entitySetting.generateID(),
    AssertionID: idp.entitySetting.generateID(),
    Destination: acs,
    Audience: sp.entityMeta.getEntityID(),
    SubjectRecipient: acs,
    Issuer: req.idp.entity_id,
    IssueInstant: now.toISOString(),
    StatusCode: Constants.StatusCode.Success,
    ConditionsNotBefore: now.toISOString(),
    ConditionsNotOnOrAfter: later.toISOString(),
    SubjectConfirmationDataNotOnOrAfter: later.toISOString(),
    NameIDFormat: EMAIL_FORMAT,
    NameID: user.email || '',
    InResponseTo: request ? request.id : null,
    ...(req.overrides || {}),
  };
  const sessionIndex = `_session_${values.AssertionID}`;
  const authn =
    `<saml:AuthnStatement AuthnInstant="${escapeXml(values.IssueInstant)}" SessionIndex="${sessionIndex}">` +
    '<saml:AuthnContext><saml:AuthnContextClassRef>urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport' +
    '</saml:AuthnContextClassRef></saml:AuthnContext></saml:AuthnStatement>';
  const replace = (template) => {
    const withStatements = template
      .replace('{AuthnStatement}', authn)
      .replace('{AttributeStatement}', attributeStatement(user));
    return { id: values.ID, context: SamlLib.replaceTagsByValue(withStatements, values) };
  };
  const response = await idp.createLoginResponse(sp, requestInfo, 'post', user, replace);
  return {
    ok: true,
    saml_response: response.context,
    request_id: request ? request.id : null,
    relay_state: relayState,
    request,
  };
}

async function handle(req) {
  if (req.op === 'metadata') return { ok: true, metadata: identityProvider(req.idp).getMetadata() };
  if (req.op === 'login') return login(req);
  throw new Error(`unknown op ${req.op}`);
}

const lines = readline.createInterface({ input: process.stdin });
lines.on('line', async (line) => {
  let answer;
  try {
    answer = await handle(JSON.parse(line));
  } catch (err) {
    answer = { ok: false, error: String(err && err.message ? err.message : err) };
  }
  process.stdout.write(`${MARK}${JSON.stringify(answer)}\n`);
});
