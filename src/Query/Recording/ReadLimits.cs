namespace Forensics.Query.Recording;

/// <summary>
/// Limits on what is read from a recording or a bundle, which may come from someone else:
/// each bounds the memory, disk or time a hostile input can make a reader spend. A recording
/// over a limit is refused with one line naming the option that raises it (docs/cli.md).
/// </summary>
public sealed record ReadLimits
{
    public static ReadLimits Default { get; } = new();

    /// <summary>manifest.json's size (--max-manifest-size). A bundle never holds more than 64 MiB.</summary>
    public long MaxManifestBytes { get; init; } = 64L << 20;

    /// <summary>Files a manifest may list, over all tables (--max-files). A busy table seals a file every 2 s.</summary>
    public int MaxFiles { get; init; } = 200_000;

    /// <summary>Bytes a bundle may extract to (--max-extract-size); it must also fit the free space of the temporary folder.</summary>
    public long MaxExtractBytes { get; init; } = 4L << 30;
}
