"""The hospital's certificate authority: key material on disk, issuance, revocation, CRLs.

Pure certificate logic (chain checks, CSRs, fingerprints, enrollment messages) lives in
phd_protocol.pki; this package adds the files and the operator commands around it.
"""
