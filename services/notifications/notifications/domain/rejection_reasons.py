"""What a prescriber reads about a refused input: a French explanation per reason code. Pure.

The event on ``referrals.rejected`` keeps intake's technical message (English, precise, for the
integrator's logs); the e-mail a clerk reads says in French what is wrong and what to do, and names
the fields concerned. The technical message never reaches the e-mail.
"""

from __future__ import annotations

from collections.abc import Sequence

from aiguillage_schemas.events.referral_lifecycle import Rejection
from aiguillage_schemas.vocabulary import RejectionReason as R

# reason -> (short label, what the sender should do). Every code has one (a unit test checks it).
EXPLANATIONS: dict[R, tuple[str, str]] = {
    R.NOT_UTF8: (
        "encodage illisible",
        "Le message doit être encodé en UTF-8. Vérifiez la configuration de votre logiciel.",
    ),
    R.NOT_JSON: (
        "format illisible",
        "Le message n'est pas un document JSON valide. Vérifiez son export.",
    ),
    R.EMPTY_MESSAGE: ("message vide", "Le message reçu ne contient aucune donnée."),
    R.MISSING_KEY: (
        "clé de message absente",
        "Le message doit porter comme clé Kafka l'identifiant de l'orientation.",
    ),
    R.KEY_MISMATCH: (
        "clé de message incohérente",
        "La clé Kafka du message doit être l'identifiant de l'orientation qu'il contient.",
    ),
    R.MESSAGE_TOO_LARGE: (
        "message trop volumineux",
        "Le message dépasse la taille admise. Retirez les pièces ou textes superflus.",
    ),
    R.BAD_HEADER: (
        "en-tête invalide",
        "Un en-tête de signature est absent ou mal formé. Vérifiez la signature des envois.",
    ),
    R.UNKNOWN_EVENT_TYPE: (
        "type de message inconnu",
        "Le type de message n'est pas l'un de ceux que le service accepte.",
    ),
    R.UNKNOWN_SCHEMA_VERSION: (
        "version de format non prise en charge",
        "La version de format indiquée n'est pas acceptée. Utilisez une version publiée.",
    ),
    R.MISSING_FIELD: ("information manquante", "Une information obligatoire n'a pas été remplie."),
    R.WRONG_TYPE: (
        "information mal saisie",
        "Une information n'a pas le format attendu (texte, nombre, date, oui/non).",
    ),
    R.UNKNOWN_ENUM_VALUE: (
        "valeur non reconnue",
        "Une information ne fait pas partie des valeurs admises (voir la liste des codes).",
    ),
    R.INVALID_VALUE: ("valeur invalide", "Une information ne respecte pas les règles de saisie."),
    R.UNKNOWN_COMMUNE: (
        "commune inconnue",
        "Le code INSEE de commune indiqué n'existe pas. Vérifiez le code (et non le code postal).",
    ),
    R.UNKNOWN_POSTAL_CODE: (
        "code postal inconnu",
        "Le code postal indiqué n'existe pas. Vérifiez l'adresse de résidence.",
    ),
    R.AMBIGUOUS_POSTAL_CODE: (
        "code postal ambigu",
        "Ce code postal couvre plusieurs communes : indiquez aussi le code INSEE de la commune.",
    ),
    R.TERRITORY_NOT_SERVED: (
        "territoire non couvert",
        "Le réseau CPCA ne couvre pas ce territoire. "
        "Orientez la personne vers le dispositif local.",
    ),
    R.IMPOSSIBLE_DATE: ("date impossible", "Une date indiquée n'existe pas au calendrier."),
    R.FUTURE_DATE: ("date dans le futur", "Une date qui doit être passée est dans le futur."),
    R.CONFLICTING_DUPLICATE: (
        "doublon contradictoire",
        "Un envoi avec le même identifiant mais un contenu différent a déjà été reçu. "
        "Pour modifier une orientation, envoyez une modification, pas un nouvel envoi.",
    ),
    R.UNKNOWN_PRESCRIBER: (
        "prescripteur inconnu",
        "Le prescripteur indiqué n'est pas inscrit. Contactez la coordination du réseau.",
    ),
    R.BAD_SIGNATURE: (
        "signature invalide",
        "La signature ne correspond pas au message. Vérifiez la clé utilisée pour signer.",
    ),
    R.REPLAYED_MESSAGE: (
        "message trop ancien",
        "Le message a été signé trop longtemps avant sa réception. Signez-le au moment de l'envoi.",
    ),
    R.OUTSIDE_JURISDICTION: (
        "hors ressort",
        "La résidence de la personne est hors du ressort de votre service.",
    ),
    R.UNKNOWN_REFERRAL: (
        "orientation inconnue",
        "Aucune orientation enregistrée ne porte cet identifiant.",
    ),
    R.REFERRAL_CLOSED: (
        "orientation close",
        "Cette orientation est close (annulée ou purgée) : elle ne peut plus être modifiée.",
    ),
    R.RETRIES_EXHAUSTED: (
        "traitement interrompu",
        "Le message n'a pas pu être traité. La coordination du réseau en est informée.",
    ),
    R.PROCESSING_ERROR: (
        "erreur de traitement",
        "Le message n'a pas pu être traité. La coordination du réseau en est informée.",
    ),
    R.NOT_OFFERED_TO_SENDER: (
        "orientation non proposée à l'expéditeur",
        "Cette orientation n'a pas été proposée à l'un de vos sites.",
    ),
    R.UNKNOWN_SITE: ("site inconnu", "Le site indiqué n'existe pas dans l'annuaire du réseau."),
    R.UNSIGNED: (
        "message non signé",
        "Le message doit être signé avec la clé qui vous a été remise.",
    ),
    R.UNKNOWN_SIGNING_KEY: (
        "clé de signature inconnue",
        "La clé de signature indiquée n'est pas enregistrée. Contactez la coordination du réseau.",
    ),
    R.STALE_SIGNATURE: (
        "signature trop ancienne",
        "Le message a été signé trop longtemps avant sa réception. Signez-le au moment de l'envoi.",
    ),
    R.NOT_THIS_CENTRE: (
        "autre centre",
        "Votre clé ne permet de parler que pour votre centre et ses sites.",
    ),
    R.ACTOR_REQUIRED: (
        "auteur non indiqué",
        "Le message doit indiquer l'utilisateur qui agit.",
    ),
}

MAX_FIELDS = 10


def reason_label(reason: R) -> str:
    return EXPLANATIONS[reason][0]


def explanation(reason: R) -> str:
    return EXPLANATIONS[reason][1]


def problems(rejection: Rejection) -> str:
    """One line per problem (field and French label), from ``errors`` or the first problem."""
    found: Sequence[tuple[R, str | None]] = [
        (e.reason, e.field_path) for e in rejection.errors
    ] or [(rejection.reason, rejection.field_path)]
    lines = [
        f"- {path or 'message entier'} : {reason_label(reason)}"
        for reason, path in found[:MAX_FIELDS]
    ]
    return "\n".join(lines)
