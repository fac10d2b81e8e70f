//! The Grand Exchange tax on sales, by the rule in force at a date.
//!
//! - before 2021-12-09: no tax;
//! - from 2021-12-09: 1 % of the sell price per item, rounded down (so an
//!   item sold under 100 gp pays nothing), capped at 5,000,000 gp per item;
//! - from 2025-05-29: 2 %, rounded down (nothing under 50 gp), same cap;
//! - exempt: the Old school bond and the items the game lists as exempt
//!   (basic tools), [`EXEMPT`].

use crate::ItemId;

/// 2021-12-09 00:00 UTC: the 1 % tax starts.
pub const TAX_1PCT_FROM: i64 = 1_639_008_000;
/// 2025-05-29 00:00 UTC: the rate becomes 2 %.
pub const TAX_2PCT_FROM: i64 = 1_748_476_800;
/// Most tax paid on one item.
pub const TAX_CAP: i64 = 5_000_000;

/// Items exempt from the tax: Old school bond, chisel, gardening trowel,
/// glassblowing pipe, hammer, needle, pestle and mortar, rake, saw,
/// secateurs, seed dibber, shears, spade, watering can (0).
pub const EXEMPT: [ItemId; 14] = [
    13190, 1755, 5325, 1785, 2347, 1733, 233, 5341, 8794, 5329, 5343, 1735, 952, 5331,
];

/// Tax rate in percent at Unix time `t`.
pub fn rate_pct(t: i64) -> i64 {
    if t >= TAX_2PCT_FROM {
        2
    } else if t >= TAX_1PCT_FROM {
        1
    } else {
        0
    }
}

/// Tax on selling one `item` at `price` at time `t`.
pub fn tax(item: ItemId, price: i64, t: i64) -> i64 {
    if EXEMPT.contains(&item) || price <= 0 {
        return 0;
    }
    (price * rate_pct(t) / 100).min(TAX_CAP)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE_2025: i64 = TAX_2PCT_FROM - 1;

    #[test]
    fn rates_by_date() {
        assert_eq!(
            tax(4151, 2_000_000, TAX_1PCT_FROM - 1),
            0,
            "no tax before 2021-12-09"
        );
        assert_eq!(tax(4151, 2_000_000, TAX_1PCT_FROM), 20_000);
        assert_eq!(tax(4151, 2_000_000, BEFORE_2025), 20_000);
        assert_eq!(tax(4151, 2_000_000, TAX_2PCT_FROM), 40_000);
    }

    #[test]
    fn rounded_down_per_item_with_thresholds() {
        assert_eq!(tax(4151, 99, BEFORE_2025), 0, "1 %: nothing under 100 gp");
        assert_eq!(tax(4151, 100, BEFORE_2025), 1);
        assert_eq!(tax(4151, 199, BEFORE_2025), 1);
        assert_eq!(tax(4151, 49, TAX_2PCT_FROM), 0, "2 %: nothing under 50 gp");
        assert_eq!(tax(4151, 50, TAX_2PCT_FROM), 1);
        assert_eq!(tax(4151, 149, TAX_2PCT_FROM), 2);
    }

    #[test]
    fn capped_and_exempt() {
        assert_eq!(tax(20997, 500_000_000, BEFORE_2025), TAX_CAP);
        assert_eq!(tax(20997, 250_000_000, TAX_2PCT_FROM), TAX_CAP);
        assert_eq!(tax(20997, 249_999_999, TAX_2PCT_FROM), 4_999_999);
        assert_eq!(
            tax(13190, 10_000_000, TAX_2PCT_FROM),
            0,
            "the bond is exempt"
        );
        assert_eq!(tax(2347, 1_000, TAX_2PCT_FROM), 0, "a hammer is exempt");
    }
}
