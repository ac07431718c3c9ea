"""XML signature checks for SAML responses: which element a signature covers, with
which algorithms, and whether one of the IdP's certificates made it.

Signature wrapping (XSW) attacks keep a genuinely signed element somewhere in the
document and hand the relying party another one. The defence here is structural and
by reference, never by searching the document:

- a signature is accepted only as a direct child of the Response or of the assertion
  (a direct child of the Response), one per element, without `ds:Object`;
- its SignedInfo has exactly one Reference, whose URI is `#` + the ID of the
  signature's own parent, so what it covers is the element it sits in;
- every ID in the document is unique (xmlsec dereferences `#id` through the ID table;
  a duplicate would let the reference resolve elsewhere);
- transforms are enveloped-signature and canonicalisation only (no XPath, XSLT or
  comments), algorithms are from an allowed list (no SHA-1, no HMAC), and the key is
  one of the IdP's certificates; the KeyInfo the message carries is ignored.

The caller then uses only the element a verified signature covers.
"""

from __future__ import annotations

import xmlsec
from lxml import etree
from xmlsec import constants

from bastion.sso.saml._xml import DS, q
from bastion.sso.saml.errors import SamlError

C14N_EXCL = "http://www.w3.org/2001/10/xml-exc-c14n#"
C14N_INCL = "http://www.w3.org/TR/2001/REC-xml-c14n-20010315"
ENVELOPED = "http://www.w3.org/2000/09/xmldsig#enveloped-signature"

CANONICALIZATIONS = {C14N_EXCL: constants.TransformExclC14N, C14N_INCL: constants.TransformInclC14N}
SIGNATURE_METHODS = {
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256": constants.TransformRsaSha256,
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384": constants.TransformRsaSha384,
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512": constants.TransformRsaSha512,
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256": constants.TransformEcdsaSha256,
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384": constants.TransformEcdsaSha384,
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha512": constants.TransformEcdsaSha512,
}
DIGEST_METHODS = {
    "http://www.w3.org/2001/04/xmlenc#sha256": constants.TransformSha256,
    "http://www.w3.org/2001/04/xmldsig-more#sha384": constants.TransformSha384,
    "http://www.w3.org/2001/04/xmlenc#sha512": constants.TransformSha512,
}
REFERENCE_TRANSFORMS = {ENVELOPED: constants.TransformEnveloped, **CANONICALIZATIONS}

# Attribute local names an XML-DSig reference may resolve through, in any namespace
# (xmlsec's `add_ids` matches the name alone; libxml2 registers xml:id by itself).
_ID_NAMES = frozenset({"ID", "Id", "id"})


def _wrapping(message: str) -> SamlError:
    return SamlError("signature_wrapping", message)


def _unsupported(what: str) -> SamlError:
    return SamlError("signature_unsupported", f"{what} is not an allowed algorithm")


def unique_ids(root: etree._Element) -> dict[str, etree._Element]:
    """Every element carrying an ID attribute, by ID; refuses a document where two
    elements share one (or one element has several), the shape wrapping needs."""
    ids: dict[str, etree._Element] = {}
    for element in root.iter(etree.Element):
        values = [v for k, v in element.attrib.items() if etree.QName(k).localname in _ID_NAMES]
        if len(values) > 1:
            raise _wrapping("an element carries several ID attributes")
        for value in values:
            if value in ids:
                raise _wrapping("two elements share one ID")
            ids[value] = element
    return ids


def signatures_in_place(
    root: etree._Element, assertion: etree._Element
) -> dict[str, etree._Element]:
    """The signatures of the response and of the assertion, keyed "response" and
    "assertion"; refuses any ds:Signature elsewhere (inside another element, a second
    one on the same element)."""
    found: dict[str, etree._Element] = {}
    for signature in root.iter(q(DS, "Signature")):
        parent = signature.getparent()
        if parent is root:
            key = "response"
        elif parent is assertion:
            key = "assertion"
        else:
            raise _wrapping("a signature sits outside the response and the assertion")
        if key in found:
            raise _wrapping(f"the {key} carries more than one signature")
        found[key] = signature
    return found


def _check_structure(signature: etree._Element) -> None:
    """One SignedInfo with one Reference to the signature's parent, allowed algorithms
    and transforms only, no ds:Object (what the verifier would otherwise follow)."""
    parent = signature.getparent()
    parent_id = parent.get("ID") if parent is not None else None
    if not parent_id:
        raise _wrapping("the signed element has no ID")
    signed_infos = signature.findall(q(DS, "SignedInfo"))
    if len(signed_infos) != 1 or signature.find(q(DS, "Object")) is not None:
        raise _wrapping("a signature must have one SignedInfo and no Object")
    signed_info = signed_infos[0]
    c14n = signed_info.find(q(DS, "CanonicalizationMethod"))
    if c14n is None or c14n.get("Algorithm") not in CANONICALIZATIONS:
        raise _unsupported("the canonicalization method")
    method = signed_info.find(q(DS, "SignatureMethod"))
    if method is None or method.get("Algorithm") not in SIGNATURE_METHODS:
        raise _unsupported("the signature method")
    references = signed_info.findall(q(DS, "Reference"))
    if len(references) != 1:
        raise _wrapping("a signature must have exactly one Reference")
    reference = references[0]
    if reference.get("URI") != f"#{parent_id}":
        raise _wrapping("the signature does not reference the element that carries it")
    transforms = reference.find(q(DS, "Transforms"))
    for transform in () if transforms is None else transforms:
        if not isinstance(transform.tag, str):
            continue  # a comment between transforms: not a transform
        if (
            transform.tag != q(DS, "Transform")
            or transform.get("Algorithm") not in REFERENCE_TRANSFORMS
        ):
            raise _unsupported("a reference transform")
        if len(transform):
            raise _unsupported("a transform with parameters")
    digest = reference.find(q(DS, "DigestMethod"))
    if digest is None or digest.get("Algorithm") not in DIGEST_METHODS:
        raise _unsupported("the digest method")


def verify(signature: etree._Element, certificates: tuple[str, ...]) -> None:
    """Raise unless `signature` (already placed, see `signatures_in_place`) is
    well-formed and verifies with one of `certificates`. The caller has registered the
    document's IDs (`xmlsec.tree.add_ids`) after `unique_ids` found them unique."""
    _check_structure(signature)
    for cert in certificates:
        context = xmlsec.SignatureContext()
        context.key = xmlsec.Key.from_memory(cert.encode(), constants.KeyDataFormatCertPem, None)
        for transform in (*SIGNATURE_METHODS.values(), *CANONICALIZATIONS.values()):
            context.enable_signature_transform(transform)
        for transform in (*REFERENCE_TRANSFORMS.values(), *DIGEST_METHODS.values()):
            context.enable_reference_transform(transform)
        try:
            context.verify(signature)
        except xmlsec.Error:
            continue
        return
    raise SamlError(
        "signature_invalid", "the signature does not verify with the IdP's certificates"
    )
