using Microsoft.Win32.SafeHandles;

namespace Forensics.Datapath.Lab;

/// <summary>
/// One process at a time builds, holds up or removes a lab: an exclusive flock on
/// /run/forensics/lab/&lt;lab&gt;.lock, held by <c>lab up</c> (and <c>record --lab</c>) for as long
/// as the lab is up and by <c>lab down</c> while it removes. The kernel releases it when the holder
/// ends, also by kill -9. Two <c>lab up</c> of one lab started at once: one builds, the other is told
/// who holds it.
/// </summary>
public sealed class LabLock : IDisposable
{
    private static readonly Dictionary<string, int> HeldHere = new(StringComparer.Ordinal);
    private readonly string path;
    private readonly string name;
    private SafeFileHandle? handle;

    private LabLock(string name, string path, SafeFileHandle? handle)
    {
        this.name = name;
        this.path = path;
        this.handle = handle;
    }

    public static string PathOf(string lab) => Path.Combine(LabNames.StateDir, lab + ".lock");

    /// <summary>Takes the lab's lock now, or throws <see cref="LabException"/> naming the holder.</summary>
    public static LabLock Acquire(string lab) =>
        TryAcquire(lab, TimeSpan.Zero) ?? throw new LabException(
            $"lab {lab} is being built, is up or is being removed by another process{Holder(lab)}: wait for it, or `forensics lab down` it");

    /// <summary>Takes the lab's lock, waiting up to <paramref name="wait"/>; null when another process keeps it.</summary>
    public static LabLock? TryAcquire(string lab, TimeSpan wait)
    {
        ArgumentNullException.ThrowIfNull(lab);
        lock (HeldHere)
        {
            // This process holds it already (lab up removing its own leftovers): nested, not a second holder.
            if (HeldHere.TryGetValue(lab, out var n))
            {
                HeldHere[lab] = n + 1;
                return new LabLock(lab, PathOf(lab), null);
            }
        }
        Directory.CreateDirectory(LabNames.StateDir);
        var path = PathOf(lab);
        var deadline = DateTime.UtcNow + wait;
        while (true)
        {
            var h = Files.TryLock(path, directory: false);
            if (h is not null)
            {
                // The previous holder may have unlinked the file between our open and our lock: lock the file that is there.
                if (Files.IsAt(h, path))
                {
                    lock (HeldHere)
                        HeldHere[lab] = 1;
                    return new LabLock(lab, path, h);
                }
                h.Dispose();
                continue;
            }
            if (DateTime.UtcNow >= deadline)
                return null;
            Thread.Sleep(50);
        }
    }

    private static string Holder(string lab) => Files.LockHolder(PathOf(lab)) is { } pid ? $" (pid {pid})" : "";

    public void Dispose()
    {
        lock (HeldHere)
        {
            if (!HeldHere.TryGetValue(name, out var n))
                return;
            if (handle is null)
            {
                HeldHere[name] = n - 1;
                return;
            }
            HeldHere.Remove(name);
        }
        // Unlinked while still held, so that no lock file outlives the lab; a waiter re-checks the inode.
        try
        {
            File.Delete(path);
        }
        catch (IOException)
        {
        }
        handle.Dispose();
        handle = null;
    }
}
