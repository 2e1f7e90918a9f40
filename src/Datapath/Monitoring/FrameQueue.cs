namespace Forensics.Datapath.Monitoring;

/// <summary>
/// A bounded queue of frames in one byte ring, for exactly one producer (the thread that drains the BPF
/// ring buffer) and one consumer (the client's sender). The producer never waits and never locks: a frame
/// that does not fit is refused, and the caller counts it. Positions only grow; the bytes between the
/// consumer's and the producer's position are frames, possibly wrapping around the end of the buffer.
/// </summary>
internal sealed class FrameQueue : IDisposable
{
    private readonly byte[] buffer;
    private readonly int mask;
    private long head; // producer: bytes written so far
    private long tail; // consumer: bytes taken so far
    private int sleeping;
    private readonly SemaphoreSlim wake = new(0, int.MaxValue);

    public FrameQueue(int bytes)
    {
        if (bytes < 4096 || (bytes & (bytes - 1)) != 0)
            throw new ArgumentOutOfRangeException(nameof(bytes), $"queue of {bytes} bytes: a power of two of at least 4096");
        buffer = new byte[bytes];
        mask = bytes - 1;
    }

    public int Capacity => buffer.Length;

    /// <summary>Bytes waiting for the consumer.</summary>
    public long Pending => Volatile.Read(ref head) - Volatile.Read(ref tail);

    /// <summary>Producer: appends a frame (header and payload), or returns false when it does not fit.</summary>
    public bool TryWrite(FrameType type, ReadOnlySpan<byte> payload)
    {
        int need = MonitorWire.HeaderBytes + payload.Length;
        long h = head;
        if (buffer.Length - (h - Volatile.Read(ref tail)) < need)
            return false;
        Span<byte> header = stackalloc byte[MonitorWire.HeaderBytes];
        MonitorWire.WriteHeader(header, type, payload.Length);
        Copy(h, header);
        Copy(h + MonitorWire.HeaderBytes, payload);
        Volatile.Write(ref head, h + need);
        return true;
    }

    private void Copy(long at, ReadOnlySpan<byte> src)
    {
        int off = (int)(at & mask);
        int first = Math.Min(src.Length, buffer.Length - off);
        src[..first].CopyTo(buffer.AsSpan(off));
        if (first < src.Length)
            src[first..].CopyTo(buffer);
    }

    /// <summary>Producer: wakes the consumer if it sleeps and something waits (call after a batch of writes).</summary>
    public void Signal()
    {
        Interlocked.MemoryBarrier(); // the write of head before the read of sleeping
        if (Volatile.Read(ref sleeping) != 0 && Pending > 0 && Interlocked.Exchange(ref sleeping, 0) != 0)
            wake.Release();
    }

    /// <summary>Consumer: the waiting bytes that lie contiguous in the buffer (at most <paramref name="max"/>).</summary>
    public ReadOnlyMemory<byte> Peek(int max)
    {
        long t = tail;
        long avail = Volatile.Read(ref head) - t;
        int off = (int)(t & mask);
        int n = (int)Math.Min(Math.Min(avail, buffer.Length - off), max);
        return buffer.AsMemory(off, n);
    }

    /// <summary>Consumer: frees <paramref name="bytes"/> taken from the front.</summary>
    public void Advance(int bytes) => Volatile.Write(ref tail, tail + bytes);

    /// <summary>Consumer: waits until something is pending, the producer signals, or the timeout passes.</summary>
    public void Wait(int timeoutMs)
    {
        Interlocked.Exchange(ref sleeping, 1); // a full fence: the write of sleeping before the read of head
        if (Pending > 0)
        {
            Volatile.Write(ref sleeping, 0);
            return;
        }
        wake.Wait(timeoutMs);
        Volatile.Write(ref sleeping, 0);
    }

    /// <summary>Wakes the consumer whatever is pending (to stop).</summary>
    public void WakeUp() => wake.Release();

    public void Dispose() => wake.Dispose();
}
