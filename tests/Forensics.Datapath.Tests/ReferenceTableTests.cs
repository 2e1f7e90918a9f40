using System.Text.RegularExpressions;
using Forensics.Datapath.Abi;
using Forensics.Datapath.Control;
using Forensics.Format;

namespace Forensics.Datapath.Tests;

/// <summary>Format's reference tables, kept by number, against the ABI's C# enums (themselves checked against the BTF).</summary>
public partial class ReferenceTableTests
{
    [GeneratedRegex("(?<=[a-z0-9])(?=[A-Z])")]
    private static partial Regex WordStart();

    private static string Kebab<T>(T value) where T : struct, Enum => WordStart().Replace(value.ToString(), "-").ToLowerInvariant();

    [Fact]
    public void DisplayNames_EveryAbiEnumValue_HasItsName()
    {
        foreach (var v in Enum.GetValues<ObsPoint>())
            Assert.Equal(Kebab(v), Names.ObsPoint((byte)v));
        Assert.Equal(Enum.GetValues<ObsPoint>().Length, Names.ObsPoints.Count);
        foreach (var v in Enum.GetValues<Dir>())
            Assert.Equal(Kebab(v), Names.Direction((byte)v));
        foreach (var v in Enum.GetValues<CtState>())
            Assert.Equal(Kebab(v), Names.CtState((byte)v));
        foreach (var v in Enum.GetValues<VerdictAction>())
            Assert.Equal(Kebab(v), Names.Action((byte)v));
        foreach (var v in Enum.GetValues<NatKind>())
            Assert.Equal(Kebab(v), Names.Nat((byte)v));
        foreach (var v in Enum.GetValues<ConnectKind>())
            Assert.Equal(Kebab(v), Names.Connect((byte)v));
        Assert.Equal(["none", "L3-Only", "L3-L4", "L4-Only", "all"], Enum.GetValues<PolicyMatch>().Select(v => Names.Match((byte)v)));
        Assert.Equal(Enum.GetValues<SrcFile>().Length, Names.SourceFiles.Count);
    }

    [Fact]
    public void EventTables_AreTheEventKindsInOrder()
    {
        var kinds = Enum.GetValues<EventKind>().Where(k => k is not EventKind.None and not EventKind.Max);
        Assert.Equal(kinds.Select(k => k.ToString().ToLowerInvariant()), Tables.Events);
    }

    [Fact]
    public void ReservedIdentities_TheEnumAndTheLabelsAgree()
    {
        var reserved = Enum.GetValues<ReservedIdentity>().Where(r => r < ReservedIdentity.MinCluster).ToList();
        Assert.Equal(reserved.Select(r => (uint)r), ReservedIdentities.Labels.Keys);
        foreach (var r in reserved)
            Assert.Equal("reserved:" + Kebab(r), ReservedIdentities.Labels[(uint)r]);
        var allocator = new IdentityAllocator();
        Assert.Equal("reserved:world", Assert.Single(allocator[(uint)ReservedIdentity.World].Labels));
    }

    [Fact]
    public void DropReasons_DatapathCodes_AreInCiliumsTable()
    {
        foreach (var code in Enum.GetValues<Control.DropReason>())
            Assert.True(Format.DropReasons.IsKnown((int)code), $"{code} ({(int)code}) is not in drop_reasons.csv");
        Assert.Equal("Unknown reason 250", Format.DropReasons.NameOf(250));
        Assert.True(Format.DropReasons.TryParse("POLICY_DENIED", out var c) && c == 133);
        Assert.True(Format.DropReasons.TryParse("Policy denied by denylist", out var d) && d == 181);
    }
}

/// <summary>The drop's file id comes from __FILE_NAME__ at compile time (bpf/lib/drop.h); its table and the C# names agree.</summary>
public partial class DropFileIdTests
{
    [GeneratedRegex("""fx_file_case\((FX_FILE_[A-Z]+), "([^"]+)"\)""")]
    private static partial Regex Case();

    [Fact]
    public void DropFileTable_EveryIdNamedAsTheCSharpNames()
    {
        var table = Case().Matches(File.ReadAllText(Forensics.Tests.Repo.Path("bpf", "lib", "drop.h")))
            .ToDictionary(m => m.Groups[1].Value, m => m.Groups[2].Value, StringComparer.Ordinal);
        Assert.NotEmpty(table);
        foreach (var (id, name) in table)
        {
            var file = Enum.Parse<SrcFile>(id["FX_FILE_".Length..].Replace("_", "", StringComparison.Ordinal), ignoreCase: true);
            Assert.Equal(name, Path.GetFileName(Names.SourceFile((byte)file)));
            Assert.True(File.Exists(Forensics.Tests.Repo.Path("bpf", Names.SourceFile((byte)file))), $"{Names.SourceFile((byte)file)} is not a BPF source");
        }
        Assert.Equal(Enum.GetValues<SrcFile>().Length - 1, table.Count); // every id but unknown
    }

    [Fact]
    public void EveryFileThatDrops_IsInTheTable_AndNamesNoFileByHand()
    {
        var table = Case().Matches(File.ReadAllText(Forensics.Tests.Repo.Path("bpf", "lib", "drop.h"))).Select(m => m.Groups[2].Value).ToHashSet();
        var sources = Directory.GetFiles(Forensics.Tests.Repo.Path("bpf"), "*.bpf.c").Concat(Directory.GetFiles(Forensics.Tests.Repo.Path("bpf", "lib"), "*.h"));
        foreach (var f in sources)
        {
            var calls = File.ReadAllLines(f).Where(l => l.Contains("FX_DROP(ctx", StringComparison.Ordinal) && !l.Contains("#define", StringComparison.Ordinal)).ToList();
            if (calls.Count == 0)
                continue;
            Assert.Contains(Path.GetFileName(f), table);
            Assert.All(calls, c => Assert.DoesNotContain("FX_FILE_", c, StringComparison.Ordinal));
        }
        // the conntrack-path drop (CT entry not created) is decided in datapath.bpf.c and says so
        var dp = File.ReadAllLines(Forensics.Tests.Repo.Path("bpf", "datapath.bpf.c"));
        Assert.Contains(dp, l => l.Contains("FX_DROP(ctx, FX_DROP_CT_CREATE_FAILED)", StringComparison.Ordinal));
    }
}
