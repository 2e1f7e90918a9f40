using Forensics.Datapath;
using Forensics.Format;

namespace Forensics.Recorder.Storage;

/// <summary>Writes a recording's manifest.json so that a crash leaves the old one or the new one, never half.</summary>
public static class ManifestStore
{
    /// <summary>Writes atomically: a temporary file, fsync, rename, fsync of the folder.</summary>
    public static void Write(Manifest manifest, string dir)
    {
        ArgumentNullException.ThrowIfNull(manifest);
        var path = Path.Combine(dir, Manifest.FileName);
        var tmp = path + ".tmp";
        using (var fs = new FileStream(tmp, FileMode.Create, FileAccess.Write, FileShare.None))
        {
            fs.Write(manifest.ToJson());
            fs.Flush(flushToDisk: true);
        }
        File.Move(tmp, path, overwrite: true);
        FileSystem.FsyncDirectory(dir);
    }
}
