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
        // A source entry that its decoder counts into under its own lock (Hubble, Tetragon) is held while the
        // manifest is serialized, so the file never holds a half-updated entry.
        var sources = manifest.Sources.Values.ToList();
        int taken = 0;
        byte[] json;
        try
        {
            foreach (var s in sources)
            {
                Monitor.Enter(s);
                taken++;
            }
            json = manifest.ToJson();
        }
        finally
        {
            for (int i = 0; i < taken; i++)
                Monitor.Exit(sources[i]);
        }
        var options = new FileStreamOptions { Mode = FileMode.Create, Access = FileAccess.Write, Share = FileShare.None };
        if (!OperatingSystem.IsWindows())
            options.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite; // a recording's files are its owner's only
        using (var fs = new FileStream(tmp, options))
        {
            fs.Write(json);
            fs.Flush(flushToDisk: true);
        }
        File.Move(tmp, path, overwrite: true);
        FileSystem.FsyncDirectory(dir);
    }
}
