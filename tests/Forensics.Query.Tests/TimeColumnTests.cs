namespace Forensics.Query.Tests;

/// <summary>
/// Times in the recorder's Parquet files are TIMESTAMP(NANOS); DuckDB 1.5.6 pushed a time filter into the
/// scan with the wrong unit (every row dropped) and returned sorted epoch values scaled wrong. The views
/// keep time filters and sorts correct on files the recorder writes.
/// </summary>
public class TimeColumnTests
{
    [Fact]
    public void TimeFilterAndSort_RecorderWrittenNanosecondTimes_AreExact()
    {
        using var rec = new TestRecording();
        rec.Add("capture", new { ktime_ns = 1_001_004_000UL, data = new byte[] { 1 } }, new { ktime_ns = 1_001_002_000UL, data = new byte[] { 2 } });
        rec.Build();
        using var s = QuerySession.Open([rec.Root]);
        Assert.Equal(2L, s.Execute("SELECT count(*) FROM capture WHERE time >= TIMESTAMPTZ '2026-11-23 10:00:01+00'").Rows.Single()[0]);
        Assert.Equal(0L, s.Execute("SELECT count(*) FROM capture WHERE time >= TIMESTAMPTZ '2026-11-23 10:00:02+00'").Rows.Single()[0]);
        var start = TestRecording.Start.ToUnixTimeMilliseconds() * 1_000_000L;
        Assert.Equal([start + 1_001_002_000L, start + 1_001_004_000L], s.Execute("SELECT epoch_ns(time) FROM capture ORDER BY time").Rows.Select(r => (long)r[0]!));
    }
}
