namespace Forensics.Query.Bundles;

/// <summary>
/// Why a bundle failed verification or could not be opened. The numbers are the
/// stable exit codes of <c>forensics verify</c> (and of every verb that opens a bundle).
/// </summary>
public enum BundleError
{
    /// <summary>Not a bundle, or its container structure is corrupt: bad tar header checksum,
    /// a header that is not the canonical one, non-zero padding, bytes after the end, wrong entry order.</summary>
    Malformed = 10,
    /// <summary>The file ends before the archive does.</summary>
    Truncated = 11,
    /// <summary>An entry that could escape or subvert extraction: "..", absolute path, link, device,
    /// directory, FIFO, extended header, duplicate name.</summary>
    Unsafe = 12,
    /// <summary>index.json does not hash to the root stored in index.sha256, or to the root the user expected.</summary>
    RootMismatch = 13,
    /// <summary>A listed file's contents differ from its SHA-256 (or its size differs, smaller).</summary>
    FileChanged = 14,
    /// <summary>A file the index lists is absent.</summary>
    FileMissing = 15,
    /// <summary>An entry the index does not list.</summary>
    FileAdded = 16,
    /// <summary>An unlisted entry holds exactly the contents of a listed entry that is absent.</summary>
    FileRenamed = 17,
    /// <summary>An entry declares more bytes than the index and manifest say it has.</summary>
    SizeExceeded = 18,
    /// <summary>The manifest or the index is malformed, or they disagree.</summary>
    ManifestInvalid = 19,
    /// <summary>The custody log is malformed or its hash chain is broken.</summary>
    CustodyBroken = 20,
    /// <summary>The signature is malformed or does not verify.</summary>
    SignatureBad = 21,
    /// <summary>The signature verifies, but with a key that is not trusted (--key / --allowed-signers).</summary>
    SignatureUntrusted = 22,
    /// <summary>A trusted key was required but the bundle carries no signature.</summary>
    Unsigned = 23,
}

/// <summary>A bundle failed a check: one line saying what is wrong, and its class.</summary>
public sealed class BundleException : Exception
{
    public BundleException(BundleError error, string message) : base(message) => Error = error;

    public BundleException() : this(BundleError.Malformed, "bundle error") { }

    public BundleException(string message) : this(BundleError.Malformed, message) { }

    public BundleException(string message, Exception inner) : base(message, inner) => Error = BundleError.Malformed;

    public BundleException(BundleError error, string message, Exception inner) : base(message, inner) => Error = error;

    public BundleError Error { get; }
}
