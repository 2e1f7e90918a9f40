using Forensics.Query.Bundles;

namespace Forensics.Query.Tests.Bundles;

public class LiteralAnonymizationTests
{
    [Fact]
    public void AnonymizeLiterals_CidrLabelAndPolicyText_AddressesReplacedConsistently()
    {
        using var pan = new CryptoPan(Enumerable.Range(0, 32).Select(i => (byte)i).ToArray());
        var label = Redactor.AnonymizeLiterals("cidr:203.0.113.0/24 reserved:world", pan);
        var policy = Redactor.AnonymizeLiterals("toCIDR:\n- 203.0.113.66/32\nport: 443 version 1.2.3", pan);

        Assert.DoesNotContain("203.0.113", label, StringComparison.Ordinal);
        Assert.DoesNotContain("203.0.113", policy, StringComparison.Ordinal);
        Assert.StartsWith("cidr:", label, StringComparison.Ordinal);
        Assert.EndsWith("/24 reserved:world", label, StringComparison.Ordinal);
        // prefix-preserving: both addresses share their first three octets after anonymization too
        var a = label["cidr:".Length..label.IndexOf('/', StringComparison.Ordinal)];
        var b = policy.Split('\n')[1][2..].Split('/')[0];
        Assert.Equal(a[..a.LastIndexOf('.')], b[..b.LastIndexOf('.')]);
        Assert.Contains("version 1.2.3", policy, StringComparison.Ordinal); // not an address
    }
}
